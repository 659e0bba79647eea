/* mlp_784's five large products (batch 128, 784-512-512-10) on two kinds of threading, to
 * measure what a step-long team of threads would give (docs/performance.md, "The sixteenth
 * session"). Built and run by bench/spin_team.py, which finds NumPy's OpenBLAS.
 *
 *   mode 0: each product on OpenBLAS's own two threads (as graphc's llvm step calls it);
 *   mode 1: each product on one thread;
 *   mode 2: two threads alive for the whole step, each running single-threaded sgemm on its
 *           half of C's columns, waiting for the other by spinning between products.
 *
 * Prints ms per step and GFLOP/s over the five products; mode 0 also prints a 2048^3 sgemm
 * rate on two threads, the peak the benchmark compares against. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

typedef long long i64;
enum { ROW_MAJOR = 101, NO_TRANS = 111, TRANS = 112 };
/* OpenBLAS's CBLAS and thread controls, as scipy-openblas64 names them */
void scipy_cblas_sgemm64_(int, int, int, i64, i64, i64, float, const float *, i64,
                          const float *, i64, float, float *, i64);
void scipy_openblas_set_num_threads64_(int);
int openblas_set_num_threads_local(int);

typedef struct {
  int ta, tb;
  i64 m, n, k;
  float *a, *b, *c;
  i64 lda, ldb, ldc;
  float alpha, beta;
} Product;

static Product products[5];
static int iterations;
static atomic_int arrived, generation;

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

static float *filled(i64 count) {
  float *p = malloc(count * sizeof(float));
  for (i64 i = 0; i < count; i++) p[i] = (float)((rand() % 1000) / 1000.0 - 0.5);
  return p;
}

/* forward x @ W1, h1 @ W2; weight gradients folded into W2 and W1 (beta 1); dh1 = dz2 @ W2.T */
static void setup(void) {
  float *x = filled(128 * 784), *w1 = filled(784 * 512), *w2 = filled(512 * 512);
  float *h1 = filled(128 * 512), *h2 = filled(128 * 512), *dz2 = filled(128 * 512);
  float *dh1 = filled(128 * 512), *dz1 = filled(128 * 512);
  products[0] = (Product){NO_TRANS, NO_TRANS, 128, 512, 784, x, w1, h1, 784, 512, 512, 1, 0};
  products[1] = (Product){NO_TRANS, NO_TRANS, 128, 512, 512, h1, w2, h2, 512, 512, 512, 1, 0};
  products[2] = (Product){TRANS, NO_TRANS, 512, 512, 128, h1, dz2, w2, 512, 512, 512, -1e-6f, 1};
  products[3] = (Product){NO_TRANS, TRANS, 128, 512, 512, dz2, w2, dh1, 512, 512, 512, 1, 0};
  products[4] = (Product){TRANS, NO_TRANS, 784, 512, 128, x, dz1, w1, 784, 512, 512, -1e-6f, 1};
}

static double flops(void) {
  double f = 0;
  for (int i = 0; i < 5; i++) f += 2.0 * products[i].m * products[i].n * products[i].k;
  return f;
}

/* C[:, n0:n1] of a product */
static void columns(const Product *p, i64 n0, i64 n1) {
  const float *b = p->tb == NO_TRANS ? p->b + n0 : p->b + n0 * p->ldb;
  scipy_cblas_sgemm64_(ROW_MAJOR, p->ta, p->tb, p->m, n1 - n0, p->k, p->alpha, p->a, p->lda,
                       b, p->ldb, p->beta, p->c + n0, p->ldc);
}

static void spin_barrier(void) {
  int seen = atomic_load(&generation);
  if (atomic_fetch_add(&arrived, 1) == 1) {
    atomic_store(&arrived, 0);
    atomic_fetch_add(&generation, 1);
  } else {
    while (atomic_load(&generation) == seen) __builtin_ia32_pause();
  }
}

static void *half(void *arg) {
  int id = (int)(i64)arg;
  openblas_set_num_threads_local(1);
  for (int it = 0; it < iterations; it++) {
    for (int i = 0; i < 5; i++) {
      const Product *p = &products[i];
      i64 split = (p->n / 2 + 15) / 16 * 16;  /* a multiple of the kernel's 16 columns */
      if (id == 0) columns(p, 0, split); else columns(p, split, p->n);
      spin_barrier();
    }
  }
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: spin_team MODE ITERATIONS\n");
    return 2;
  }
  int mode = atoi(argv[1]);
  iterations = atoi(argv[2]);
  setup();
  double t = now();
  if (mode == 2) {
    pthread_t other;
    pthread_create(&other, NULL, half, (void *)1);
    half((void *)0);
    pthread_join(other, NULL);
  } else {
    scipy_openblas_set_num_threads64_(mode == 0 ? 2 : 1);
    for (int it = 0; it < iterations; it++)
      for (int i = 0; i < 5; i++) columns(&products[i], 0, products[i].n);
  }
  t = now() - t;
  printf("mode %d: %.3f ms/step %.1f GFLOP/s\n", mode, t / iterations * 1e3,
         flops() * iterations / t / 1e9);
  if (mode == 0) {
    i64 n = 2048;
    float *a = filled(n * n), *b = filled(n * n), *c = filled(n * n);
    double s = now();
    for (int r = 0; r < 10; r++)
      scipy_cblas_sgemm64_(ROW_MAJOR, NO_TRANS, NO_TRANS, n, n, n, 1, a, n, b, n, 0, c, n);
    printf("sgemm 2048^3 on two threads: %.1f GFLOP/s\n", 2.0 * n * n * n * 10 / (now() - s) / 1e9);
  }
  return 0;
}
