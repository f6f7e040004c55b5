// Time ggml's CPU ssm_scan (Mamba-1 form: A is {d_state, d_inner}) at the shapes of
// tools/bench_ops.py: float32, batch 1, d_state 16, one sequence of `seqlen` tokens.
// Built by tools/llamacpp/build.sh against the llama.cpp/ggml it builds.
//
//   ssm-scan-bench [threads=2] [seqlen=2048] [repeat=20] [dim ...=1536 5120]
//
// For each dim it times two graphs with ggml_graph_compute (the CPU backend's own thread
// pool, the same as llama.cpp uses), each after one warm-up run:
//   scan  - the GGML_OP_SSM_SCAN node alone: softplus(dt), one expf per (t, d, n),
//           state update, y = C . state; writes y and the final state.
//   block - what llama.cpp's Mamba-1 layer computes around it to get the same result as our
//           fused SelectiveScan (delta_bias, D skip and z gate included): dt + dt_bias (ADD),
//           SSM_SCAN, y + u * D (MUL, ADD), silu(z) * y (SWIGLU split) -- the graph of
//           src/models/mamba-base.cpp, minus the matmuls and the conv.
// Inputs are drawn like tools/bench_ops.py's (u, z, B, C, D, dt_bias ~ N(0,1), delta ~
// 0.5 N(0,1) - 1, A = -exp(N(0,1))), initial state 0.
#define _POSIX_C_SOURCE 199309L
#include "ggml.h"
#include "ggml-cpu.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static double urand(void) {  // xorshift64*, (0, 1)
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return ((rng_state * 0x2545F4914F6CDD1Dull) >> 11) * (1.0 / 9007199254740992.0) + 1e-300;
}

static float nrand(void) {  // Box-Muller
    return (float) (sqrt(-2.0 * log(urand())) * cos(6.283185307179586 * urand()));
}

static void fill(struct ggml_tensor * t, float scale, float shift, int neg_exp) {
    float * p = ggml_get_data_f32(t);
    const int64_t n = ggml_nelements(t);
    for (int64_t i = 0; i < n; i++) {
        float v = nrand() * scale + shift;
        p[i] = neg_exp ? -expf(v) : v;
    }
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

static int cmp_double(const void * a, const void * b) {
    const double x = *(const double *) a, y = *(const double *) b;
    return (x > y) - (x < y);
}

static void run(const char * what, struct ggml_cgraph * gf, int threads, int repeat, int64_t dim,
                int64_t seqlen) {
    struct ggml_cplan plan = ggml_graph_plan(gf, threads, NULL);
    uint8_t * work = NULL;
    if (plan.work_size > 0) {
        work = malloc(plan.work_size);
        plan.work_data = work;
    }
    double * t = malloc(sizeof(double) * repeat);
    ggml_graph_compute(gf, &plan);  // warm-up
    for (int r = 0; r < repeat; r++) {
        const double t0 = now_ms();
        if (ggml_graph_compute(gf, &plan) != GGML_STATUS_SUCCESS) {
            fprintf(stderr, "compute failed\n");
            exit(1);
        }
        t[r] = now_ms() - t0;
    }
    qsort(t, repeat, sizeof(double), cmp_double);
    printf("%-5s dim=%5lld seqlen=%lld dstate=16 batch=1 threads=%d: median %8.2f ms  best %8.2f ms  worst %8.2f ms  (%d runs, %d nodes)\n",
           what, (long long) dim, (long long) seqlen, threads, t[repeat / 2], t[0], t[repeat - 1], repeat,
           ggml_graph_n_nodes(gf));
    fflush(stdout);
    free(t);
    free(work);
}

static void bench_dim(int64_t dim, int64_t seqlen, int threads, int repeat) {
    const int64_t d_state = 16;
    const size_t big = (size_t) dim * seqlen * sizeof(float);
    // x, dt, z, scan out, add, mul, add, swiglu out + small tensors + per-tensor overhead
    const size_t mem = 10 * big + 4 * (size_t) dim * d_state * sizeof(float) + 64 * ggml_tensor_overhead() +
                       ggml_graph_overhead() * 2 + (8 << 20);
    struct ggml_init_params ip = { mem, NULL, false };
    struct ggml_context * ctx = ggml_init(ip);

    struct ggml_tensor * s   = ggml_new_tensor_4d(ctx, GGML_TYPE_F32, d_state, 1, dim, 1);
    struct ggml_tensor * x   = ggml_new_tensor_4d(ctx, GGML_TYPE_F32, 1, dim, seqlen, 1);
    struct ggml_tensor * dt  = ggml_new_tensor_3d(ctx, GGML_TYPE_F32, dim, seqlen, 1);
    struct ggml_tensor * A   = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, d_state, dim);
    struct ggml_tensor * B   = ggml_new_tensor_4d(ctx, GGML_TYPE_F32, d_state, 1, seqlen, 1);
    struct ggml_tensor * C   = ggml_new_tensor_4d(ctx, GGML_TYPE_F32, d_state, 1, seqlen, 1);
    struct ggml_tensor * ids = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, 1);
    struct ggml_tensor * z   = ggml_new_tensor_3d(ctx, GGML_TYPE_F32, dim, seqlen, 1);
    struct ggml_tensor * D   = ggml_new_tensor_1d(ctx, GGML_TYPE_F32, dim);
    struct ggml_tensor * dtb = ggml_new_tensor_1d(ctx, GGML_TYPE_F32, dim);

    memset(s->data, 0, ggml_nbytes(s));
    fill(x, 1, 0, 0);
    fill(dt, 0.5f, -1, 0);
    fill(A, 1, 0, 1);
    fill(B, 1, 0, 0);
    fill(C, 1, 0, 0);
    fill(z, 1, 0, 0);
    fill(D, 1, 0, 0);
    fill(dtb, 1, 0, 0);
    ((int32_t *) ids->data)[0] = 0;

    // scan alone (dt used as is: softplus(dt) without a bias)
    struct ggml_cgraph * g1 = ggml_new_graph(ctx);
    ggml_build_forward_expand(g1, ggml_ssm_scan(ctx, s, x, dt, A, B, C, ids, 1));
    run("scan", g1, threads, repeat, dim, seqlen);

    // the same work as our fused SelectiveScan(u, delta, A, B, C, D, z, delta_bias)
    struct ggml_cgraph * g2 = ggml_new_graph(ctx);
    struct ggml_tensor * dt2 = ggml_add(ctx, dt, dtb);
    struct ggml_tensor * ys  = ggml_ssm_scan(ctx, s, x, dt2, A, B, C, ids, 1);
    struct ggml_tensor * u   = ggml_reshape_3d(ctx, x, dim, seqlen, 1);
    struct ggml_tensor * y   = ggml_view_3d(ctx, ys, dim, seqlen, 1, x->nb[2], x->nb[3], 0);
    y = ggml_add(ctx, y, ggml_mul(ctx, u, D));
    y = ggml_swiglu_split(ctx, z, y);
    ggml_build_forward_expand(g2, y);
    run("block", g2, threads, repeat, dim, seqlen);

    ggml_free(ctx);
}

int main(int argc, char ** argv) {
    const int threads = argc > 1 ? atoi(argv[1]) : 2;
    const int64_t seqlen = argc > 2 ? atoll(argv[2]) : 2048;
    const int repeat = argc > 3 ? atoi(argv[3]) : 20;
    ggml_cpu_init();
    if (argc > 4) {
        for (int i = 4; i < argc; i++) {
            bench_dim(atoll(argv[i]), seqlen, threads, repeat);
        }
    } else {
        bench_dim(1536, seqlen, threads, repeat);
        bench_dim(5120, seqlen, threads, repeat);
    }
    return 0;
}
