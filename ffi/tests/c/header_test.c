/*
 * The generated C header (edgeloopFFI.h, what the iOS XCFramework ships)
 * against the desktop library: the declarations link, and calls through
 * them work as the Swift bindings make them, values serialized as UniFFI
 * does.
 *
 *   header_test MODEL.gguf EXPECTED_CONTRACT_VERSION
 *
 * See run.sh for how it is compiled.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgeloopFFI.h"

static int failures = 0;

#define CHECK(cond, ...)                                     \
    do {                                                     \
        if (!(cond)) {                                       \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
            fprintf(stderr, __VA_ARGS__);                    \
            fprintf(stderr, "\n");                           \
            failures++;                                      \
        }                                                    \
    } while (0)

/* A string argument: its UTF-8 bytes in a buffer the library allocates. */
static RustBuffer string_arg(const char *s) {
    RustCallStatus status = {0};
    ForeignBytes bytes = {(int32_t)strlen(s), (const uint8_t *)s};
    RustBuffer b = ffi_edgeloop_ffi_rustbuffer_from_bytes(bytes, &status);
    if (status.code != 0) {
        fprintf(stderr, "rustbuffer_from_bytes failed\n");
        exit(2);
    }
    return b;
}

/* A record argument from serialized bytes. */
static RustBuffer bytes_arg(const uint8_t *data, int32_t len) {
    RustCallStatus status = {0};
    ForeignBytes bytes = {len, data};
    return ffi_edgeloop_ffi_rustbuffer_from_bytes(bytes, &status);
}

static void release(RustBuffer b) {
    RustCallStatus status = {0};
    ffi_edgeloop_ffi_rustbuffer_free(b, &status);
}

static uint32_t be32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/* EngineConfig with every field at its default: backend None, threads 0,
 * context 0, memory budget None, models dir None. */
static const uint8_t DEFAULT_CONFIG[] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s MODEL.gguf EXPECTED_CONTRACT_VERSION\n", argv[0]);
        return 2;
    }
    uint32_t contract = ffi_edgeloop_ffi_uniffi_contract_version();
    CHECK(contract == (uint32_t)atoi(argv[2]), "contract version %u, bindings expect %s", contract, argv[2]);

    /* version() returns a string: its UTF-8 bytes. */
    RustCallStatus status = {0};
    RustBuffer v = uniffi_edgeloop_ffi_fn_func_version(&status);
    CHECK(status.code == 0, "version() failed");
    CHECK(v.len == 5 && memcmp(v.data, "0.1.0", 5) == 0, "version() is %.*s", (int)v.len, v.data);
    release(v);

    /* An unknown model is an error: EdgeloopError variant 2 (ModelNotFound)
     * with its reason string. */
    status = (RustCallStatus){0};
    uniffi_edgeloop_ffi_fn_constructor_engine_open(
        string_arg("no-such-model"), bytes_arg(DEFAULT_CONFIG, sizeof DEFAULT_CONFIG), &status);
    CHECK(status.code == 1, "opening an unknown model gave status %d", status.code);
    if (status.code == 1) {
        const uint8_t *e = status.errorBuf.data;
        CHECK(status.errorBuf.len >= 8 && be32(e) == 2, "error variant %u, expected 2 (ModelNotFound)", be32(e));
        uint32_t n = be32(e + 4);
        CHECK(n + 8 <= status.errorBuf.len, "reason length %u past the buffer", n);
        char *reason = strndup((const char *)e + 8, n);
        CHECK(strstr(reason, "no-such-model") != NULL, "reason does not name the model: %s", reason);
        free(reason);
        release(status.errorBuf);
    }

    /* The real model opens and counts tokens. */
    status = (RustCallStatus){0};
    uint64_t engine = uniffi_edgeloop_ffi_fn_constructor_engine_open(
        string_arg(argv[1]), bytes_arg(DEFAULT_CONFIG, sizeof DEFAULT_CONFIG), &status);
    CHECK(status.code == 0 && engine != 0, "opening %s failed (status %d)", argv[1], status.code);
    if (status.code == 0) {
        status = (RustCallStatus){0};
        uint64_t handle = uniffi_edgeloop_ffi_fn_clone_engine(engine, &status);
        uint32_t n = uniffi_edgeloop_ffi_fn_method_engine_count_tokens(handle, string_arg("Hello world"), &status);
        CHECK(status.code == 0 && n == 2, "count_tokens(\"Hello world\") = %u (status %d)", n, status.code);
        uniffi_edgeloop_ffi_fn_free_engine(engine, &status);
        CHECK(status.code == 0, "free_engine failed");
    }

    if (failures == 0) {
        printf("header test: ok\n");
    }
    return failures == 0 ? 0 : 1;
}
