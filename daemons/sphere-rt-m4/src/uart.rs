//! The hardware seam for ARM's CMSDK APB UART (as on QEMU's mps2-an386): interrupt-driven
//! receive into a byte ring, interrupt-driven transmit from a byte ring. Everything else is in
//! `sphere-rt`.

use core::cell::RefCell;
use core::ptr::{read_volatile, write_volatile};

use cortex_m::interrupt::{CriticalSection, Mutex};
use sphere_rt::ring::ByteRing;

const DATA: usize = 0x00;
const STATE: usize = 0x04;
const CTRL: usize = 0x08;
const INTCLEAR: usize = 0x0C;
const BAUDDIV: usize = 0x10;

const STATE_TXFULL: u32 = 1 << 0;
const STATE_RXFULL: u32 = 1 << 1;
const CTRL_TX_EN: u32 = 1 << 0;
const CTRL_RX_EN: u32 = 1 << 1;
const CTRL_TX_INTEN: u32 = 1 << 2;
const CTRL_RX_INTEN: u32 = 1 << 3;
const INT_TX: u32 = 1 << 0;
const INT_RX: u32 = 1 << 1;

/// A ring shared between an interrupt handler and the main loop.
pub type SharedRing<const N: usize> = Mutex<RefCell<ByteRing<N>>>;

/// An empty shared ring (all zeroes: it lives in .bss, not in flash).
pub const fn ring<const N: usize>() -> SharedRing<N> {
    Mutex::new(RefCell::new(ByteRing::new()))
}

/// One UART with its rings (`R` bytes in, `T` bytes out).
pub struct Uart<const R: usize, const T: usize> {
    base: usize,
    /// Bytes received, filled by the RX interrupt.
    rx: &'static SharedRing<R>,
    /// Bytes to send, drained by the TX interrupt.
    tx: &'static SharedRing<T>,
}

impl<const R: usize, const T: usize> Uart<R, T> {
    /// The UART at `base` with its rings.
    pub const fn new(base: usize, rx: &'static SharedRing<R>, tx: &'static SharedRing<T>) -> Self {
        Self { base, rx, tx }
    }

    fn read(&self, reg: usize) -> u32 {
        // SAFETY: `base` is a CMSDK UART's register block (fixed by the board's memory map),
        // and these registers have no side effects beyond the UART itself.
        unsafe { read_volatile((self.base + reg) as *const u32) }
    }

    fn write(&self, reg: usize, value: u32) {
        // SAFETY: as in `read`.
        unsafe { write_volatile((self.base + reg) as *mut u32, value) }
    }

    /// Enables the transmitter and receiver with their interrupts (`rx_irq`: whether received
    /// bytes are wanted).
    pub fn init(&self, rx_irq: bool) {
        self.write(BAUDDIV, 16);
        let rx = if rx_irq { CTRL_RX_EN | CTRL_RX_INTEN } else { 0 };
        self.write(CTRL, CTRL_TX_EN | CTRL_TX_INTEN | rx);
    }

    fn kick(&self, tx: &mut ByteRing<T>) {
        if self.read(STATE) & STATE_TXFULL == 0 {
            if let Some(b) = tx.pop() {
                self.write(DATA, u32::from(b));
            }
        }
    }

    /// Queues all of `bytes` for sending, or none (returns false) when the ring lacks room.
    pub fn send(&self, bytes: &[u8]) -> bool {
        cortex_m::interrupt::free(|cs| {
            let mut tx = self.tx.borrow(cs).borrow_mut();
            if !tx.push_all(bytes) {
                return false;
            }
            self.kick(&mut tx);
            true
        })
    }

    /// Moves received bytes into `out`; returns how many.
    pub fn receive(&self, out: &mut [u8]) -> usize {
        cortex_m::interrupt::free(|cs| self.rx.borrow(cs).borrow_mut().pop_into(out))
    }

    /// Whether received bytes are waiting (call inside the critical section that decides to
    /// sleep).
    pub fn rx_pending(&self, cs: &CriticalSection) -> bool {
        !self.rx.borrow(cs).borrow().is_empty()
    }

    /// The RX interrupt: move every received byte into the ring.
    ///
    /// The interrupt is cleared BEFORE the data register is drained: a byte that arrives after
    /// the last RXFULL check then raises the interrupt again. Clearing it afterwards would
    /// drop that byte's interrupt while the byte sits in the (one-byte) receiver, which then
    /// waits for a read that never comes: the link stalls for good.
    pub fn on_rx_interrupt(&self) {
        self.write(INTCLEAR, INT_RX);
        cortex_m::interrupt::free(|cs| {
            let mut rx = self.rx.borrow(cs).borrow_mut();
            while self.read(STATE) & STATE_RXFULL != 0 {
                rx.push(self.read(DATA) as u8);
            }
        });
    }

    /// The TX interrupt: the transmitter has room; send the next byte.
    pub fn on_tx_interrupt(&self) {
        self.write(INTCLEAR, INT_TX);
        cortex_m::interrupt::free(|cs| self.kick(&mut self.tx.borrow(cs).borrow_mut()));
    }

    /// Writes directly, waiting for the transmitter (for panics only).
    pub fn write_blocking(&self, bytes: &[u8]) {
        for &b in bytes {
            while self.read(STATE) & STATE_TXFULL != 0 {}
            self.write(DATA, u32::from(b));
        }
    }
}
