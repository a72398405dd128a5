//! The watchdog's ioctl request numbers from `<linux/watchdog.h>`, encoded
//! as `_IOC` in `<asm-generic/ioctl.h>` does (with the architectures that use
//! other direction values and size widths). One encoding for the agent's
//! device and for the emulated device of the tests.

/// powerpc, mips and sparc encode directions and sizes differently.
const ALT: bool = cfg!(any(
    target_arch = "powerpc",
    target_arch = "powerpc64",
    target_arch = "mips",
    target_arch = "mips32r6",
    target_arch = "mips64",
    target_arch = "mips64r6",
    target_arch = "sparc",
    target_arch = "sparc64"
));
const SIZEBITS: u32 = if ALT { 13 } else { 14 };
const READ: u32 = 2;
const WRITE: u32 = if ALT { 4 } else { 1 };

const NRBITS: u32 = 8;
const TYPEBITS: u32 = 8;
const NRSHIFT: u32 = 0;
const TYPESHIFT: u32 = NRSHIFT + NRBITS;
const SIZESHIFT: u32 = TYPESHIFT + TYPEBITS;
const DIRSHIFT: u32 = SIZESHIFT + SIZEBITS;

/// `_IOC(dir, 'W', nr, size)`.
const fn ioc(dir: u32, nr: u8, size: usize) -> u32 {
    assert!(size < (1 << SIZEBITS));
    (dir << DIRSHIFT) | ((size as u32) << SIZESHIFT) | ((b'W' as u32) << TYPESHIFT) | (nr as u32)
}

/// `_IOR('W', nr, size)`.
pub const fn ior(nr: u8, size: usize) -> u32 {
    ioc(READ, nr, size)
}

/// `_IOWR('W', nr, size)`.
pub const fn iowr(nr: u8, size: usize) -> u32 {
    ioc(READ | WRITE, nr, size)
}

const INT: usize = std::mem::size_of::<libc::c_int>();
/// `sizeof(struct watchdog_info)`: two u32 and a 32-byte identity.
pub const INFO_SIZE: usize = 40;

pub const WDIOC_GETSUPPORT: u32 = ior(0, INFO_SIZE);
pub const WDIOC_GETSTATUS: u32 = ior(1, INT);
pub const WDIOC_GETBOOTSTATUS: u32 = ior(2, INT);
pub const WDIOC_KEEPALIVE: u32 = ior(5, INT);
pub const WDIOC_SETTIMEOUT: u32 = iowr(6, INT);
pub const WDIOC_GETTIMEOUT: u32 = ior(7, INT);
pub const WDIOC_GETTIMELEFT: u32 = ior(10, INT);

#[cfg(test)]
mod tests {
    use super::*;

    /// The numbers `<linux/watchdog.h>` gives on x86_64 and aarch64 (as
    /// printed by a C program including it).
    #[test]
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    fn request_numbers_match_the_kernel_header() {
        assert_eq!(WDIOC_GETSUPPORT, 0x8028_5700);
        assert_eq!(WDIOC_GETSTATUS, 0x8004_5701);
        assert_eq!(WDIOC_GETBOOTSTATUS, 0x8004_5702);
        assert_eq!(WDIOC_KEEPALIVE, 0x8004_5705);
        assert_eq!(WDIOC_SETTIMEOUT, 0xc004_5706);
        assert_eq!(WDIOC_GETTIMEOUT, 0x8004_5707);
        assert_eq!(WDIOC_GETTIMELEFT, 0x8004_570a);
    }
}
