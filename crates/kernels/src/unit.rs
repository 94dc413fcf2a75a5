//! Which bf16 unit this CPU has, detected once at run time: Intel AMX tiles (asked of
//! the kernel, which hands out the tile state on request) or AVX512_BF16. The packed
//! layout, both backends and the dispatch read it from here.

/// The bf16 unit in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Intel AMX tiles (`tdpbf16ps`).
    Amx,
    /// AVX512_BF16 (`vdpbf16ps`).
    Avx512Bf16,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Amx => "amx",
            Backend::Avx512Bf16 => "avx512bf16",
        }
    }
}

/// The fastest bf16 unit of this CPU, or `None` (then bf16 is unavailable: callers
/// stay in f32 or report a clear error). `UAE_BF16_BACKEND=avx512bf16` skips AMX (to
/// measure one against the other on a machine with both); `UAE_BF16_BACKEND=none`
/// hides both (to test the no-bf16 path anywhere).
pub fn backend() -> Option<Backend> {
    static B: std::sync::OnceLock<Option<Backend>> = std::sync::OnceLock::new();
    *B.get_or_init(|| {
        let choice = std::env::var("UAE_BF16_BACKEND").unwrap_or_default();
        if choice == "none" {
            None
        } else if choice != "avx512bf16" && amx_tiles() {
            Some(Backend::Amx)
        } else if avx512bf16() {
            Some(Backend::Avx512Bf16)
        } else {
            None
        }
    })
}

/// Whether the CPU has AVX-512F and AVX512_BF16.
pub fn avx512bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether this CPU and kernel run AMX bf16 (asks the kernel for the tile state
/// once). `UAE_NO_AMX` hides AMX.
pub fn amx_tiles() -> bool {
    static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OK.get_or_init(imp::enable)
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod imp {
    use std::arch::asm;

    const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
    const XFEATURE_XTILEDATA: i64 = 18;
    const SYS_ARCH_PRCTL: i64 = 158;

    pub(super) fn enable() -> bool {
        if std::env::var_os("UAE_NO_AMX").is_some() {
            return false;
        }
        let leaf7 = std::arch::x86_64::__cpuid_count(7, 0);
        let (tile, bf16) = (leaf7.edx & (1 << 24) != 0, leaf7.edx & (1 << 22) != 0);
        if !(tile && bf16) {
            return false;
        }
        // Linux hands out the 8 KB tile state only on request (arch_prctl, kernel 5.16+).
        let rc: i64;
        // SAFETY: a plain syscall with two integer arguments; it touches no memory of ours.
        unsafe {
            asm!(
                "syscall",
                inlateout("rax") SYS_ARCH_PRCTL => rc,
                in("rdi") ARCH_REQ_XCOMP_PERM,
                in("rsi") XFEATURE_XTILEDATA,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack)
            );
        }
        rc == 0
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod imp {
    pub(super) fn enable() -> bool {
        false
    }
}
