/* A minimal test harness for the C suites: CHECK records a failure and keeps going, TEST registers a
 * function, and main() prints "N passed, N failed" last so CI can read the result. Built with
 * ASan+UBSan by test/c/Makefile. */
#ifndef CPB_T_H
#define CPB_T_H
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct t_case { const char *name; void (*fn)(void); };
extern struct t_case t_cases[];
extern int t_ncases;
extern int t_failures_in_case;

#define T_MAX_CASES 512
#define TEST(name)                                                                  \
  static void name(void);                                                          \
  __attribute__((constructor)) static void t_register_##name(void) {                \
    if (t_ncases < T_MAX_CASES) t_cases[t_ncases++] = (struct t_case){#name, name}; \
  }                                                                                \
  static void name(void)

#define CHECK(cond)                                                                       \
  do {                                                                                    \
    if (!(cond)) {                                                                        \
      fprintf(stderr, "  %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond);         \
      t_failures_in_case++;                                                               \
    }                                                                                     \
  } while (0)

#define CHECK_EQ(a, b)                                                                    \
  do {                                                                                    \
    long long t_a_ = (long long)(a), t_b_ = (long long)(b);                               \
    if (t_a_ != t_b_) {                                                                   \
      fprintf(stderr, "  %s:%d: CHECK_EQ(%s, %s) failed: %lld != %lld\n", __FILE__, __LINE__, \
              #a, #b, t_a_, t_b_);                                                        \
      t_failures_in_case++;                                                               \
    }                                                                                     \
  } while (0)

/* Stops the current case (use when continuing would dereference garbage). */
#define REQUIRE(cond)                                                                     \
  do {                                                                                    \
    if (!(cond)) {                                                                        \
      fprintf(stderr, "  %s:%d: REQUIRE(%s) failed\n", __FILE__, __LINE__, #cond);       \
      t_failures_in_case++;                                                               \
      return;                                                                             \
    }                                                                                     \
  } while (0)

#endif
