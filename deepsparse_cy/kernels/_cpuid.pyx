# cython: language_level=3
"""cpuid + xgetbv feature detection (x86-64; reports nothing elsewhere)."""

cdef extern from *:
    """
    #if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
    #include <cpuid.h>
    static int dscy_cpuid(unsigned leaf, unsigned sub, unsigned *r) {
        unsigned a, b, c, d;
        if (!__get_cpuid_count(leaf, sub, &a, &b, &c, &d)) { r[0]=r[1]=r[2]=r[3]=0; return 0; }
        r[0]=a; r[1]=b; r[2]=c; r[3]=d; return 1;
    }
    static unsigned long long dscy_xgetbv(void) {
        unsigned eax, edx;
        __asm__ volatile(".byte 0x0f, 0x01, 0xd0" : "=a"(eax), "=d"(edx) : "c"(0));
        return ((unsigned long long)edx << 32) | eax;
    }
    static int dscy_is_x86(void) { return 1; }
    #if defined(__linux__)
    #include <sys/syscall.h>
    #include <unistd.h>
    /* Linux >= 5.16 gives a process the AMX tile data state (XTILEDATA, feature 18) only when it
     * asks (ARCH_REQ_XCOMP_PERM = 0x1023); granted once, for every thread; idempotent. */
    static int dscy_amx_permit(void) { return syscall(SYS_arch_prctl, 0x1023, 18) == 0; }
    #else
    static int dscy_amx_permit(void) { return 0; }
    #endif
    #else
    static int dscy_amx_permit(void) { return 0; }
    static int dscy_cpuid(unsigned leaf, unsigned sub, unsigned *r) { r[0]=r[1]=r[2]=r[3]=0; return 0; }
    static unsigned long long dscy_xgetbv(void) { return 0; }
    static int dscy_is_x86(void) { return 0; }
    #endif
    """
    int dscy_cpuid(unsigned leaf, unsigned sub, unsigned *r)
    unsigned long long dscy_xgetbv()
    int dscy_is_x86()
    int dscy_amx_permit()


def cpuid(unsigned leaf, unsigned sub=0):
    cdef unsigned r[4]
    dscy_cpuid(leaf, sub, r)
    return (r[0], r[1], r[2], r[3])


def features():
    """dict of feature name -> bool, including OS support of the register state (xgetbv)."""
    cdef unsigned r[4]
    f = {}
    if not dscy_is_x86():
        return f
    dscy_cpuid(0, 0, r)
    cdef unsigned maxleaf = r[0]
    dscy_cpuid(1, 0, r)
    ecx1, edx1 = r[2], r[3]
    osxsave = bool(ecx1 & (1 << 27))
    cdef unsigned long long xcr0 = dscy_xgetbv() if osxsave else 0
    os_avx = osxsave and (xcr0 & 0x6) == 0x6
    os_avx512 = os_avx and (xcr0 & 0xE0) == 0xE0
    f["sse4_2"] = bool(ecx1 & (1 << 20))
    f["popcnt"] = bool(ecx1 & (1 << 23))
    f["fma"] = bool(ecx1 & (1 << 12)) and os_avx
    f["f16c"] = bool(ecx1 & (1 << 29)) and os_avx
    f["avx"] = bool(ecx1 & (1 << 28)) and os_avx
    ebx7 = ecx7 = edx7 = eax71 = 0
    if maxleaf >= 7:
        dscy_cpuid(7, 0, r)
        ebx7, ecx7, edx7 = r[1], r[2], r[3]
        dscy_cpuid(7, 1, r)
        eax71 = r[0]
    f["avx2"] = bool(ebx7 & (1 << 5)) and os_avx
    f["bmi2"] = bool(ebx7 & (1 << 8))
    f["avx512f"] = bool(ebx7 & (1 << 16)) and os_avx512
    f["avx512dq"] = bool(ebx7 & (1 << 17)) and os_avx512
    f["avx512cd"] = bool(ebx7 & (1 << 28)) and os_avx512
    f["avx512bw"] = bool(ebx7 & (1 << 30)) and os_avx512
    f["avx512vl"] = bool(ebx7 & (1 << 31)) and os_avx512
    f["avx512_vnni"] = bool(ecx7 & (1 << 11)) and os_avx512
    f["avx512_vbmi"] = bool(ecx7 & (1 << 1)) and os_avx512
    f["avx512_bf16"] = bool(eax71 & (1 << 5)) and os_avx512
    f["avx_vnni"] = bool(eax71 & (1 << 4)) and os_avx
    f["amx_int8"] = bool(edx7 & (1 << 25))
    f["amx_tile"] = bool(edx7 & (1 << 24))
    f["amx_bf16"] = bool(edx7 & (1 << 22))
    # tile config + data state enabled in XCR0 (bits 17, 18) and granted to this process
    f["os_amx"] = bool(f["amx_tile"] and osxsave and (xcr0 & 0x60000) == 0x60000
                       and dscy_amx_permit())
    f["os_avx"] = bool(os_avx)
    f["os_avx512"] = bool(os_avx512)
    return f


def brand():
    cdef unsigned r[4]
    dscy_cpuid(0x80000000, 0, r)
    if r[0] < 0x80000004:
        return ""
    out = b""
    for leaf in (0x80000002, 0x80000003, 0x80000004):
        dscy_cpuid(leaf, 0, r)
        for x in r:
            out += int(x).to_bytes(4, "little")
    return out.split(b"\0")[0].decode("ascii", "replace").strip()
