/* A tiny test harness: CHECK counts passes and failures (thread-safe) and
 * prints each failure with the library's last error; h_summary() prints the
 * final "N passed, M failed" line and gives the exit code. */
#ifndef CDN_HARNESS_H
#define CDN_HARNESS_H

#include <stdio.h>
#include <string.h>
#include "cdncore.h"

static int h_passed, h_failed;

#define H_PASS() __atomic_add_fetch(&h_passed, 1, __ATOMIC_RELAXED)
#define H_FAIL() __atomic_add_fetch(&h_failed, 1, __ATOMIC_RELAXED)

#define CHECK(cond)                                                        \
  do {                                                                     \
    if (cond) {                                                            \
      H_PASS();                                                            \
    } else {                                                               \
      H_FAIL();                                                            \
      fprintf(stderr, "%s:%d: CHECK(%s) failed (last error: %s)\n",        \
              __FILE__, __LINE__, #cond, cdn_last_error());                \
    }                                                                      \
  } while (0)

/* Checks that a call returns the expected status. */
#define CHECK_ST(call, want)                                               \
  do {                                                                     \
    cdn_status st_ = (call);                                               \
    if (st_ == (want)) {                                                   \
      H_PASS();                                                            \
    } else {                                                               \
      H_FAIL();                                                            \
      fprintf(stderr, "%s:%d: %s returned %s, wanted %s (last error: %s)\n", \
              __FILE__, __LINE__, #call, cdn_status_str((int)st_),         \
              cdn_status_str((int)(want)), cdn_last_error());              \
    }                                                                      \
  } while (0)

#define CHECK_OK(call) CHECK_ST(call, CDN_OK)

/* A (pointer, length) pair for a string literal or C string. */
#define S(str) (const uint8_t *)(str), strlen(str)

/* Does the last error message contain `needle`? */
static inline int last_error_has(const char *needle) {
  return strstr(cdn_last_error(), needle) != NULL;
}

static inline int h_summary(void) {
  printf("%d passed, %d failed\n", h_passed, h_failed);
  return h_failed == 0 ? 0 : 1;
}

#endif
