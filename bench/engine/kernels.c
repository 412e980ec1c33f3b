/*
 * Engine benchmark kernels for Xenolith.
 *
 * One translation unit, compiled once per kernel (-DKERNEL=KERNEL_SHA256 | KERNEL_MEMMIX |
 * KERNEL_VM | KERNEL_FPSIMD) with general-register-only code generation (SSE2 for
 * KERNEL_FPSIMD). The resulting object is linked
 * both into a flat guest image (guest_crt.S, guest.ld) and into a native executable
 * (native_main.c), so guest and host run the same machine code for the kernel.
 *
 * Everything is deterministic; each kernel prints checksum lines through platform_putc()
 * (port 0xe9 in the guest, putchar natively) which run.sh compares byte for byte.
 * No libc: only the freestanding headers.
 */
#include <stddef.h>
#include <stdint.h>

#define KERNEL_SHA256 1
#define KERNEL_MEMMIX 2
#define KERNEL_VM 3
#define KERNEL_FPSIMD 4

#ifndef KERNEL
#error "define KERNEL"
#endif

void platform_putc(int c);
int bench_main(void);

/* ---------------------------------------------------------------- output helpers */

static void put_str(const char *s)
{
    while (*s)
        platform_putc(*s++);
}

static void put_hex(uint64_t v, int digits)
{
    static const char hex[] = "0123456789abcdef";
    for (int i = digits - 1; i >= 0; i--)
        platform_putc(hex[(v >> (4 * i)) & 0xf]);
}

static void put_dec(uint64_t v)
{
    char buf[24];
    int n = 0;
    do {
        buf[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        platform_putc(buf[--n]);
}

static __attribute__((unused)) void put_kv_dec(const char *k, uint64_t v)
{
    put_str(k);
    put_dec(v);
    platform_putc('\n');
}

static __attribute__((unused)) void put_kv_hex(const char *k, uint64_t v)
{
    put_str(k);
    put_hex(v, 16);
    platform_putc('\n');
}

/* 64-bit LCG (Knuth MMIX constants). */
static inline uint64_t lcg_next(uint64_t *s)
{
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return *s;
}

#if KERNEL == KERNEL_SHA256
/* ---------------------------------------------------------------- 1. sha256
 * A plain portable SHA-256 over 16 MiB of LCG-generated data, several passes; between
 * passes the first 32 bytes of the data are xored with the previous digest so each
 * pass hashes different input. */

#define SHA_DATA_SIZE (16u << 20)
#define SHA_PASSES 2

static uint8_t sha_data[SHA_DATA_SIZE];

typedef struct {
    uint32_t h[8];
    uint8_t buf[64];
    uint64_t len;
    unsigned fill;
} sha256_ctx;

static const uint32_t sha_k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static inline uint32_t ror32(uint32_t x, unsigned n) { return (x >> n) | (x << (32 - n)); }

static void sha256_block(uint32_t h[8], const uint8_t *p)
{
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 |
               (uint32_t)p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ror32(w[i - 15], 7) ^ ror32(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ror32(w[i - 2], 17) ^ ror32(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t S1 = ror32(e, 6) ^ ror32(e, 11) ^ ror32(e, 25);
        uint32_t ch = (e & f) ^ (~e & g);
        uint32_t t1 = hh + S1 + ch + sha_k[i] + w[i];
        uint32_t S0 = ror32(a, 2) ^ ror32(a, 13) ^ ror32(a, 22);
        uint32_t maj = (a & b) ^ (a & c) ^ (b & c);
        uint32_t t2 = S0 + maj;
        hh = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
    h[5] += f;
    h[6] += g;
    h[7] += hh;
}

static void sha256_init(sha256_ctx *c)
{
    static const uint32_t iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    for (int i = 0; i < 8; i++)
        c->h[i] = iv[i];
    c->len = 0;
    c->fill = 0;
}

static void sha256_update(sha256_ctx *c, const uint8_t *p, size_t n)
{
    c->len += n;
    while (n && c->fill) {
        c->buf[c->fill++] = *p++;
        n--;
        if (c->fill == 64) {
            sha256_block(c->h, c->buf);
            c->fill = 0;
        }
    }
    while (n >= 64) {
        sha256_block(c->h, p);
        p += 64;
        n -= 64;
    }
    while (n--)
        c->buf[c->fill++] = *p++;
}

static void sha256_final(sha256_ctx *c, uint8_t out[32])
{
    uint64_t bits = c->len * 8;
    c->buf[c->fill++] = 0x80;
    if (c->fill > 56) {
        while (c->fill < 64)
            c->buf[c->fill++] = 0;
        sha256_block(c->h, c->buf);
        c->fill = 0;
    }
    while (c->fill < 56)
        c->buf[c->fill++] = 0;
    for (int i = 0; i < 8; i++)
        c->buf[56 + i] = (uint8_t)(bits >> (56 - 8 * i));
    sha256_block(c->h, c->buf);
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (uint8_t)(c->h[i] >> 24);
        out[4 * i + 1] = (uint8_t)(c->h[i] >> 16);
        out[4 * i + 2] = (uint8_t)(c->h[i] >> 8);
        out[4 * i + 3] = (uint8_t)c->h[i];
    }
}

static void put_digest(const char *label, const uint8_t d[32])
{
    put_str(label);
    for (int i = 0; i < 32; i++)
        put_hex(d[i], 2);
    platform_putc('\n');
}

static int run_kernel(void)
{
    uint8_t d[32];
    sha256_ctx c;

    /* Self-test against the FIPS 180-2 vector so a wrong result is recognisable as such. */
    sha256_init(&c);
    sha256_update(&c, (const uint8_t *)"abc", 3);
    sha256_final(&c, d);
    put_digest("sha256 abc ", d);
    static const uint8_t abc[4] = {0xba, 0x78, 0x16, 0xbf};
    int ok = d[0] == abc[0] && d[1] == abc[1] && d[2] == abc[2] && d[3] == abc[3];

    uint64_t s = 0x5eed5eed12345678ULL;
    for (size_t i = 0; i < SHA_DATA_SIZE; i += 8) {
        uint64_t r = lcg_next(&s);
        for (int j = 0; j < 8; j++)
            sha_data[i + j] = (uint8_t)(r >> (32 + 4 * j));
    }

    for (int pass = 0; pass < SHA_PASSES; pass++) {
        sha256_init(&c);
        /* uneven update sizes exercise the buffering path too */
        size_t off = 0, step = 1000003;
        while (off < SHA_DATA_SIZE) {
            size_t n = SHA_DATA_SIZE - off < step ? SHA_DATA_SIZE - off : step;
            sha256_update(&c, sha_data + off, n);
            off += n;
        }
        sha256_final(&c, d);
        put_str("sha256 pass ");
        put_dec((uint64_t)pass);
        put_digest(" ", d);
        for (int i = 0; i < 32; i++)
            sha_data[i] ^= d[i];
    }
    put_kv_dec("sha256 bytes hashed ", (uint64_t)SHA_DATA_SIZE * SHA_PASSES);
    put_str(ok ? "sha256 self-test ok\n" : "sha256 self-test FAILED\n");
    return ok ? 0 : 1;
}

#elif KERNEL == KERNEL_MEMMIX
/* ---------------------------------------------------------------- 2. memcpy/memset mix
 * Hand-written byte and word copy/fill loops (forward, backward/overlapping) over two
 * 4 MiB buffers, with LCG-chosen sizes (mostly small, some medium, a few large) and
 * arbitrary alignments. The loops are compiled with -fno-tree-loop-distribute-patterns so
 * gcc keeps them as loops rather than calling memcpy/memset. */

#define MBUF (4u << 20)
#define MEM_OPS 450000

static uint8_t mem_a[MBUF], mem_b[MBUF];

typedef uint64_t __attribute__((may_alias, aligned(1))) u64u;

static void copy_bytes(uint8_t *d, const uint8_t *s, size_t n)
{
    while (n--)
        *d++ = *s++;
}

/* forward word copy: byte head until d is 8-aligned, 8-byte body (s may be unaligned), tail */
static void copy_words(uint8_t *d, const uint8_t *s, size_t n)
{
    while (n && ((uintptr_t)d & 7)) {
        *d++ = *s++;
        n--;
    }
    while (n >= 32) {
        uint64_t a = *(const u64u *)s, b = *(const u64u *)(s + 8);
        uint64_t c = *(const u64u *)(s + 16), e = *(const u64u *)(s + 24);
        ((uint64_t *)d)[0] = a;
        ((uint64_t *)d)[1] = b;
        ((uint64_t *)d)[2] = c;
        ((uint64_t *)d)[3] = e;
        d += 32;
        s += 32;
        n -= 32;
    }
    while (n >= 8) {
        *(uint64_t *)d = *(const u64u *)s;
        d += 8;
        s += 8;
        n -= 8;
    }
    while (n--)
        *d++ = *s++;
}

/* memmove semantics: backward when the destination overlaps the source from above */
static void move_bytes(uint8_t *d, const uint8_t *s, size_t n)
{
    if (d <= s || d >= s + n) {
        copy_words(d, s, n);
        return;
    }
    d += n;
    s += n;
    while (n >= 8) {
        d -= 8;
        s -= 8;
        *(u64u *)d = *(const u64u *)s;
        n -= 8;
    }
    while (n--)
        *--d = *--s;
}

static void set_bytes(uint8_t *d, uint8_t v, size_t n)
{
    while (n--)
        *d++ = v;
}

static void set_words(uint8_t *d, uint8_t v, size_t n)
{
    uint64_t w = v * 0x0101010101010101ULL;
    while (n && ((uintptr_t)d & 7)) {
        *d++ = v;
        n--;
    }
    while (n >= 8) {
        *(uint64_t *)d = w;
        d += 8;
        n -= 8;
    }
    while (n--)
        *d++ = v;
}

static uint64_t fnv_buf(const uint8_t *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i += 8) {
        h ^= *(const uint64_t *)(p + i);
        h *= 0x100000001b3ULL;
    }
    return h;
}

static int run_kernel(void)
{
    uint64_t s = 0x1234abcd9876ef01ULL;
    for (size_t i = 0; i < MBUF; i += 8) {
        *(uint64_t *)(mem_a + i) = lcg_next(&s);
        *(uint64_t *)(mem_b + i) = ~lcg_next(&s);
    }

    uint64_t moved = 0, mix = 0;
    uint64_t cnt[6] = {0};
    for (int it = 0; it < MEM_OPS; it++) {
        uint64_t r = lcg_next(&s);
        uint64_t r2 = lcg_next(&s);
        unsigned cls = (unsigned)(r >> 60);     /* size class */
        size_t n;
        if (cls < 9)
            n = 1 + (size_t)((r >> 40) & 127);      /* small: 1..128 */
        else if (cls < 15)
            n = 1 + (size_t)((r >> 36) & 4095);     /* medium: 1..4096 */
        else
            n = 1 + (size_t)((r >> 30) & 16383);    /* large: 1..16Ki */
        size_t so = (size_t)(r2 % (MBUF - n + 1));
        size_t doff = (size_t)((r2 >> 32) * 2654435761ULL % (MBUF - n + 1));
        unsigned op = (unsigned)((r >> 8) % 6);
        uint8_t *src = (op & 1) ? mem_b : mem_a;
        uint8_t *dst = (op & 1) ? mem_a : mem_b;
        switch (op) {
        case 0:
            copy_bytes(dst + doff, src + so, n);
            break;
        case 1:
        case 2:
            copy_words(dst + doff, src + so, n);
            break;
        case 3: {
            /* overlapping move inside one buffer, shifted by a small odd amount either way */
            size_t shift = 1 + (size_t)((r >> 16) & 63);
            if (doff + shift + n <= MBUF)
                move_bytes(dst + doff + shift, dst + doff, n);
            else
                move_bytes(dst + doff - shift, dst + doff, n);
            break;
        }
        case 4:
            set_bytes(dst + doff, (uint8_t)r2, n);
            break;
        default:
            set_words(dst + doff, (uint8_t)(r2 >> 8), n);
            break;
        }
        cnt[op]++;
        moved += n;
        mix = (mix ^ dst[doff] ^ ((uint64_t)dst[doff + n - 1] << 8) ^ ((uint64_t)n << 16)) * 0x9e3779b97f4a7c15ULL;
    }
    put_kv_dec("memmix ops ", MEM_OPS);
    put_kv_dec("memmix bytes moved ", moved);
    put_str("memmix op counts");
    for (int i = 0; i < 6; i++) {
        platform_putc(' ');
        put_dec(cnt[i]);
    }
    platform_putc('\n');
    put_kv_hex("memmix running mix ", mix);
    put_kv_hex("memmix fnv a ", fnv_buf(mem_a, MBUF));
    put_kv_hex("memmix fnv b ", fnv_buf(mem_b, MBUF));
    return 0;
}

#elif KERNEL == KERNEL_VM
/* ---------------------------------------------------------------- 3. byte-code VM
 * A small stack machine with a switch dispatch, running two programs: a trial-division
 * prime counter (div/mod heavy) and a Collatz step counter (shift/branch heavy). */

enum {
    OP_HALT, OP_PUSH, OP_LOAD, OP_STORE, OP_ADD, OP_SUB, OP_MUL, OP_MOD,
    OP_AND, OP_SHR, OP_LT, OP_GT, OP_EQ, OP_JMP, OP_JZ, OP_JNZ, OP_DUP, OP_POP, OP_INC,
};

#define PRIME_LIMIT 150000
#define COLLATZ_LIMIT 40000

typedef struct {
    int64_t vars[8];
    uint64_t steps;
} vm_result;

static void vm_run(const int32_t *code, vm_result *res)
{
    int64_t stack[64];
    int64_t *vars = res->vars;
    int sp = 0;
    int pc = 0;
    uint64_t steps = 0;
    for (;;) {
        int32_t op = code[pc++];
        steps++;
        switch (op) {
        case OP_HALT:
            res->steps = steps;
            return;
        case OP_PUSH:
            stack[sp++] = code[pc++];
            break;
        case OP_LOAD:
            stack[sp++] = vars[code[pc++]];
            break;
        case OP_STORE:
            vars[code[pc++]] = stack[--sp];
            break;
        case OP_ADD:
            sp--;
            stack[sp - 1] += stack[sp];
            break;
        case OP_SUB:
            sp--;
            stack[sp - 1] -= stack[sp];
            break;
        case OP_MUL:
            sp--;
            stack[sp - 1] *= stack[sp];
            break;
        case OP_MOD:
            sp--;
            stack[sp - 1] %= stack[sp];
            break;
        case OP_AND:
            sp--;
            stack[sp - 1] &= stack[sp];
            break;
        case OP_SHR:
            sp--;
            stack[sp - 1] = (int64_t)((uint64_t)stack[sp - 1] >> (stack[sp] & 63));
            break;
        case OP_LT:
            sp--;
            stack[sp - 1] = stack[sp - 1] < stack[sp];
            break;
        case OP_GT:
            sp--;
            stack[sp - 1] = stack[sp - 1] > stack[sp];
            break;
        case OP_EQ:
            sp--;
            stack[sp - 1] = stack[sp - 1] == stack[sp];
            break;
        case OP_JMP:
            pc = code[pc];
            break;
        case OP_JZ:
            pc = stack[--sp] == 0 ? code[pc] : pc + 1;
            break;
        case OP_JNZ:
            pc = stack[--sp] != 0 ? code[pc] : pc + 1;
            break;
        case OP_DUP:
            stack[sp] = stack[sp - 1];
            sp++;
            break;
        case OP_POP:
            sp--;
            break;
        case OP_INC:
            vars[code[pc]]++;
            pc++;
            break;
        default:
            res->steps = steps;
            res->vars[7] = -1;
            return;
        }
    }
}

/* A tiny assembler with labels, so the programs below stay readable. */
static int32_t vm_code[512];
static int vm_ncode;
static int vm_label[32];
static int vm_fix_at[64], vm_fix_label[64], vm_nfix;

static void a_begin(void)
{
    vm_ncode = 0;
    vm_nfix = 0;
}
static void a_op(int op) { vm_code[vm_ncode++] = op; }
static void a_op1(int op, int arg)
{
    vm_code[vm_ncode++] = op;
    vm_code[vm_ncode++] = arg;
}
static void a_jump(int op, int label)
{
    vm_code[vm_ncode++] = op;
    vm_fix_at[vm_nfix] = vm_ncode;
    vm_fix_label[vm_nfix++] = label;
    vm_code[vm_ncode++] = -1;
}
static void a_label(int label) { vm_label[label] = vm_ncode; }
static void a_end(void)
{
    for (int i = 0; i < vm_nfix; i++)
        vm_code[vm_fix_at[i]] = vm_label[vm_fix_label[i]];
}

/* Count primes below PRIME_LIMIT by trial division.
 * vars: 0 n, 1 count, 2 d, 3 weighted sum of primes mod 1000003 */
static void build_primes(void)
{
    enum { LOOP_N, LOOP_D, IS_PRIME, NEXT_N, END };
    a_begin();
    a_op1(OP_PUSH, 2), a_op1(OP_STORE, 0);
    a_op1(OP_PUSH, 0), a_op1(OP_STORE, 1);
    a_op1(OP_PUSH, 0), a_op1(OP_STORE, 3);
    a_label(LOOP_N);
    a_op1(OP_LOAD, 0), a_op1(OP_PUSH, PRIME_LIMIT), a_op(OP_LT), a_jump(OP_JZ, END);
    a_op1(OP_PUSH, 2), a_op1(OP_STORE, 2);
    a_label(LOOP_D);
    a_op1(OP_LOAD, 2), a_op(OP_DUP), a_op(OP_MUL), a_op1(OP_LOAD, 0), a_op(OP_GT), a_jump(OP_JNZ, IS_PRIME);
    a_op1(OP_LOAD, 0), a_op1(OP_LOAD, 2), a_op(OP_MOD), a_jump(OP_JZ, NEXT_N);
    a_op1(OP_INC, 2), a_jump(OP_JMP, LOOP_D);
    a_label(IS_PRIME);
    a_op1(OP_INC, 1);
    a_op1(OP_LOAD, 3), a_op1(OP_PUSH, 7), a_op(OP_MUL), a_op1(OP_LOAD, 0), a_op(OP_ADD);
    a_op1(OP_PUSH, 1000003), a_op(OP_MOD), a_op1(OP_STORE, 3);
    a_label(NEXT_N);
    a_op1(OP_INC, 0), a_jump(OP_JMP, LOOP_N);
    a_label(END);
    a_op(OP_HALT);
    a_end();
}

/* Collatz trajectories for 1 <= i < COLLATZ_LIMIT.
 * vars: 0 i, 1 x, 2 total steps, 3 max steps, 4 steps for this i, 5 i with max steps */
static void build_collatz(void)
{
    enum { LOOP_I, LOOP_X, EVEN, DONE_X, NEXT_I, END };
    a_begin();
    a_op1(OP_PUSH, 1), a_op1(OP_STORE, 0);
    a_label(LOOP_I);
    a_op1(OP_LOAD, 0), a_op1(OP_PUSH, COLLATZ_LIMIT), a_op(OP_LT), a_jump(OP_JZ, END);
    a_op1(OP_LOAD, 0), a_op1(OP_STORE, 1), a_op1(OP_PUSH, 0), a_op1(OP_STORE, 4);
    a_label(LOOP_X);
    a_op1(OP_LOAD, 1), a_op1(OP_PUSH, 1), a_op(OP_EQ), a_jump(OP_JNZ, DONE_X);
    a_op1(OP_INC, 4);
    a_op1(OP_LOAD, 1), a_op(OP_DUP), a_op1(OP_PUSH, 1), a_op(OP_AND), a_jump(OP_JZ, EVEN);
    a_op1(OP_PUSH, 3), a_op(OP_MUL), a_op1(OP_PUSH, 1), a_op(OP_ADD), a_op1(OP_STORE, 1), a_jump(OP_JMP, LOOP_X);
    a_label(EVEN);
    a_op1(OP_PUSH, 1), a_op(OP_SHR), a_op1(OP_STORE, 1), a_jump(OP_JMP, LOOP_X);
    a_label(DONE_X);
    a_op1(OP_LOAD, 2), a_op1(OP_LOAD, 4), a_op(OP_ADD), a_op1(OP_STORE, 2);
    a_op1(OP_LOAD, 4), a_op1(OP_LOAD, 3), a_op(OP_GT), a_jump(OP_JZ, NEXT_I);
    a_op1(OP_LOAD, 4), a_op1(OP_STORE, 3), a_op1(OP_LOAD, 0), a_op1(OP_STORE, 5);
    a_label(NEXT_I);
    a_op1(OP_INC, 0), a_jump(OP_JMP, LOOP_I);
    a_label(END);
    a_op(OP_HALT);
    a_end();
}

static int run_kernel(void)
{
    vm_result r;
    uint64_t total = 0;

    for (int i = 0; i < 8; i++)
        r.vars[i] = 0;
    build_primes();
    vm_run(vm_code, &r);
    total += r.steps;
    put_kv_dec("vm primes below ", PRIME_LIMIT);
    put_kv_dec("vm primes count ", (uint64_t)r.vars[1]);
    put_kv_dec("vm primes weighted sum ", (uint64_t)r.vars[3]);
    put_kv_dec("vm primes steps ", r.steps);
    int bad = r.vars[7] != 0;

    for (int i = 0; i < 8; i++)
        r.vars[i] = 0;
    build_collatz();
    vm_run(vm_code, &r);
    total += r.steps;
    put_kv_dec("vm collatz below ", COLLATZ_LIMIT);
    put_kv_dec("vm collatz total steps ", (uint64_t)r.vars[2]);
    put_kv_dec("vm collatz max steps ", (uint64_t)r.vars[3]);
    put_kv_dec("vm collatz max at ", (uint64_t)r.vars[5]);
    put_kv_dec("vm collatz steps ", r.steps);
    bad |= r.vars[7] != 0;

    put_kv_dec("vm total instructions ", total);
    return bad;
}

#elif KERNEL == KERNEL_FPSIMD
/* ---------------------------------------------------------------- fpsimd
 * A single-precision matrix multiply with SSE2 (mulps/addps on 4-wide rows) and a
 * memcpy made of unaligned 16-byte loads and stores (movdqu) at varying alignments.
 * The checksums are of the exact float bits: the engine's SSE must be bit-exact. */
#include <emmintrin.h>

#define MN 256
#ifndef MREPS
#define MREPS 16
#endif
static float ma[MN * MN] __attribute__((aligned(16)));
static float mb[MN * MN] __attribute__((aligned(16)));
static float mc[MN * MN] __attribute__((aligned(16)));

#define CBUF (2u << 20)
static uint8_t cp_a[CBUF + 64] __attribute__((aligned(16)));
static uint8_t cp_b[CBUF + 64] __attribute__((aligned(16)));

static void matmul(void)
{
    for (int i = 0; i < MN; i++) {
        for (int j = 0; j < MN; j += 4)
            _mm_store_ps(&mc[i * MN + j], _mm_setzero_ps());
        for (int k = 0; k < MN; k++) {
            __m128 a = _mm_set1_ps(ma[i * MN + k]);
            for (int j = 0; j < MN; j += 4) {
                __m128 b = _mm_load_ps(&mb[k * MN + j]);
                __m128 c = _mm_load_ps(&mc[i * MN + j]);
                _mm_store_ps(&mc[i * MN + j], _mm_add_ps(c, _mm_mul_ps(a, b)));
            }
        }
    }
}

static void copy_movdqu(uint8_t *d, const uint8_t *s, size_t n)
{
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        __m128i x0 = _mm_loadu_si128((const __m128i *)(s + i));
        __m128i x1 = _mm_loadu_si128((const __m128i *)(s + i + 16));
        __m128i x2 = _mm_loadu_si128((const __m128i *)(s + i + 32));
        __m128i x3 = _mm_loadu_si128((const __m128i *)(s + i + 48));
        _mm_storeu_si128((__m128i *)(d + i), x0);
        _mm_storeu_si128((__m128i *)(d + i + 16), x1);
        _mm_storeu_si128((__m128i *)(d + i + 32), x2);
        _mm_storeu_si128((__m128i *)(d + i + 48), x3);
    }
    for (; i < n; i++)
        d[i] = s[i];
}

static uint64_t fnv_bytes(const uint8_t *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

static int run_kernel(void)
{
    uint64_t seed = 12345;
    for (int i = 0; i < MN * MN; i++) {
        ma[i] = (float)(int)(lcg_next(&seed) >> 54) / 64.0f - 4.0f;
        mb[i] = (float)(int)(lcg_next(&seed) >> 54) / 32.0f + 0.125f;
    }
    uint64_t h = 0;
    for (int r = 0; r < MREPS; r++) {
        matmul();
        /* feed the result back so every repetition differs */
        for (int i = 0; i < MN * MN; i += 7)
            ma[i] = mc[i] * (1.0f / 4096.0f);
        h ^= fnv_bytes((const uint8_t *)mc, sizeof mc) + (uint64_t)r;
    }
    put_kv_hex("fpsimd matmul hash ", h);

    for (size_t i = 0; i < CBUF; i++)
        cp_a[i] = (uint8_t)(lcg_next(&seed) >> 56);
    uint64_t moved = 0;
    for (int pass = 0; pass < 96; pass++) {
        size_t so = pass % 16, dof = (pass * 7) % 16;
        size_t n = CBUF - (size_t)(pass * 131 % 4096);
        copy_movdqu(cp_b + dof, cp_a + so, n);
        copy_movdqu(cp_a + so, cp_b + dof, n);
        cp_a[pass] ^= (uint8_t)pass;
        moved += 2 * n;
    }
    put_kv_hex("fpsimd memcpy hash ", fnv_bytes(cp_a, CBUF));
    put_kv_dec("fpsimd memcpy bytes ", moved);
    return 0;
}
#else
#error "unknown KERNEL"
#endif

int bench_main(void)
{
    return run_kernel();
}
