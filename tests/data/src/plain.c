/* Built with -O0: no inlining, one line record per statement. */
#include <stdio.h>
#include <stdlib.h>

static int checksum(const char *s) {
    int sum = 0;
    while (*s) {
        sum = sum * 31 + *s++;
    }
    return sum;
}

int main(int argc, char **argv) {
    int total = 0;
    for (int i = 1; i < argc; i++) {
        total += checksum(argv[i]);
    }
    printf("%d\n", total);
    return total > 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
