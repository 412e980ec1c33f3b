/* Native host build of the engine benchmark kernels: the very same kernels.o as the
 * guest image, with libc only for output. */
#include <stdio.h>

int bench_main(void);

void platform_putc(int c) { putchar(c); }

int main(void)
{
    int r = bench_main();
    fflush(stdout);
    return r;
}
