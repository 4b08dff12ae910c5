/*
 * replay.c -- the main() of a fuzz target built as a plain program: every
 * file named on the command line goes once through the target's
 * LLVMFuzzerTestOneInput, so ctest replays the seeds (and any crash file
 * libFuzzer wrote) with any compiler.  A libFuzzer build
 * (clang -fsanitize=fuzzer) links the target without this file.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        FILE *f = fopen(argv[i], "rb");
        if (!f) {
            perror(argv[i]);
            return 1;
        }
        uint8_t *buf = NULL;
        size_t len = 0, cap = 0, r;
        do {
            if (len == cap) {
                uint8_t *nb = realloc(buf, cap = cap ? cap * 2 : 4096);
                if (!nb) abort();
                buf = nb;
            }
            r = fread(buf + len, 1, cap - len, f);
            len += r;
        } while (r > 0);
        fclose(f);
        LLVMFuzzerTestOneInput(buf, len);
        free(buf);
    }
    printf("%d inputs replayed\n", argc - 1);
    return 0;
}
