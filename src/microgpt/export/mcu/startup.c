/* Startup for QEMU's mps2-an386 (a Cortex-M4 with FPU): the vector table, and a reset handler
   that copies .data from flash, zeroes .bss, enables the FPU, and calls main with the command
   line QEMU was given (-append), read over semihosting. newlib's rdimon.specs brings printf over
   semihosting but no startup code for this board. Built with -DMG_BARE (no semihosting at all,
   for measuring sizes) it just runs main and stops. */
#include <stdint.h>
#include <stdlib.h>

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _stack_top;
int main(int argc, char **argv);
void reset_handler(void);

static void halt(void)
{
    for (;;) {
    }
}

/* The initial stack pointer, then the exception handlers (a fault stops the core) */
__attribute__((section(".vectors"), used)) static void (*const vectors[16])(void) = {
    (void (*)(void))&_stack_top, reset_handler, halt, halt, halt, halt, halt, 0, 0, 0, 0,
    halt, halt, 0, halt, halt,
};

#ifndef MG_BARE
extern void initialise_monitor_handles(void);
extern void __libc_init_array(void);
void _init(void) {}
void _fini(void) {}

#define SYS_GET_CMDLINE 0x15

static int semihost(int op, void *arg)
{
    register int r0 __asm__("r0") = op;
    register void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

static char cmdline[1024];
static char *args[64];

/* argv from QEMU's -append (argv[0] is the kernel's file name), split at spaces */
static int command_line(void)
{
    struct {
        char *buf;
        int len;
    } block = {cmdline, sizeof cmdline - 1};
    char *p = cmdline;
    int argc = 0;
    if (semihost(SYS_GET_CMDLINE, &block) != 0) {
        return 0;
    }
    cmdline[block.len] = 0;
    while (*p && argc < 63) {
        while (*p == ' ') {
            *p++ = 0;
        }
        if (*p) {
            args[argc++] = p;
        }
        while (*p && *p != ' ') {
            p++;
        }
    }
    args[argc] = 0;
    return argc;
}
#endif

void reset_handler(void)
{
    uint32_t *src = &_sidata, *dst = &_sdata;
    while (dst < &_edata) {
        *dst++ = *src++;
    }
    for (dst = &_sbss; dst < &_ebss;) {
        *dst++ = 0;
    }
    *(volatile uint32_t *)0xE000ED88 |= 0xFu << 20; /* CPACR: full access to CP10, CP11 (FPU) */
    __asm__ volatile("dsb\n\tisb");
#ifdef MG_BARE
    main(0, 0);
    halt();
#else
    initialise_monitor_handles();
    __libc_init_array();
    {
        int argc = command_line();
        exit(main(argc, args));
    }
#endif
}
