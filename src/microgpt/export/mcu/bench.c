/* Measures the model on the emulated Cortex-M4: run under
       qemu-system-arm -M mps2-an386 -icount shift=0 ... -append "bench SAMPLES SEED"
   it draws SAMPLES samples (the training run's temperature, no prompt) as the host's
   `./model --seed SEED` does and prints them, then one line:
       mcu state BYTES stack BYTES ticks N positions N
   state: sizeof(mg_model); stack: the deepest the model's calls went below main's frame (the
   stack is painted with a pattern first, and the lowest overwritten word found afterwards);
   ticks: SysTick counts over the sampling calls only, read around each call (so the 24-bit
   counter never wraps within one). With -icount shift=0 every instruction takes 1 ns of
   virtual time, and SysTick runs at 25 MHz on this board: instructions = 40 x ticks.
   Nothing is printed while the model runs, so printf's stack is not counted. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "model.h"

#define SYST_CSR (*(volatile uint32_t *)0xE000E010) /* control and status */
#define SYST_RVR (*(volatile uint32_t *)0xE000E014) /* reload value */
#define SYST_CVR (*(volatile uint32_t *)0xE000E018) /* current value, counting down */
#define PATTERN 0xA5A5A5A5u
#define PAINTED 16384 /* bytes of stack painted below main's frame */

static mg_model model;

/* SysTick counts since `start` (it counts down, modulo 2**24) */
static uint32_t since(uint32_t start)
{
    return (start - SYST_CVR) & 0xFFFFFF;
}

static uint32_t stack_pointer(void)
{
    uint32_t sp;
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    return sp;
}

int main(int argc, char **argv)
{
    const int samples = argc > 1 ? atoi(argv[1]) : 20;
    const uint32_t seed = argc > 2 ? (uint32_t)strtoul(argv[2], 0, 10) : 42;
    uint32_t deepest = 0, start, sp, i;
    unsigned long long ticks = 0;
    int s, n, tokens[MG_BLOCK_SIZE], len, t;
    volatile uint32_t *word;
    mg_init(&model, seed);
    SYST_RVR = 0xFFFFFF;
    SYST_CVR = 0;
    SYST_CSR = 5; /* enable, processor clock, no interrupt */
    for (s = 0; s < samples; s++) {
        sp = stack_pointer();
        word = (volatile uint32_t *)(sp - PAINTED);
        for (i = 0; i < (PAINTED - 64) / 4; i++) { /* leaves this frame's 64 bytes alone */
            word[i] = PATTERN;
        }
        start = SYST_CVR;
        mg_start(&model, 0, 0);
        ticks += since(start);
        for (n = 0; n < MG_BLOCK_SIZE; n++) {
            start = SYST_CVR;
            t = mg_next(&model, (mg_real)MG_TEMPERATURE, 0);
            ticks += since(start);
            if (t == MG_BOS) {
                break;
            }
            tokens[n] = t;
        }
        for (i = 0; i < (PAINTED - 64) / 4 && word[i] == PATTERN; i++) {
        }
        if (sp - (uint32_t)(uintptr_t)&word[i] > deepest) {
            deepest = sp - (uint32_t)(uintptr_t)&word[i];
        }
        printf("sample %2d: ", s + 1);
        for (i = 0; i < (uint32_t)n; i++) {
            const char *text = mg_token_text(tokens[i], &len);
            fwrite(text, 1, (size_t)len, stdout);
        }
        putchar('\n');
    }
    printf("mcu state %u stack %lu ticks %llu positions %lu\n", (unsigned)sizeof model,
           (unsigned long)deepest, ticks, model.positions);
    return 0;
}
