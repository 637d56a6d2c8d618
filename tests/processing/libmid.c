/* A library between two parts of the application's stack: the tests withhold its symbols, so a
 * stack walker crosses its frames by scanning. */
#include "libmid.h"

volatile int mid_sink;

__attribute__((noinline)) static int mid_inner(int (*callback)(int), int value) {
    int result = callback(value * 2 + 1);
    mid_sink += result;
    return result + mid_sink;
}

__attribute__((noinline)) int mid_call(int (*callback)(int), int value) {
    int result = mid_inner(callback, value + 3);
    mid_sink ^= result;
    return result - 1;
}
