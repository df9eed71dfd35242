//! OpenSphere's Cortex-M4 real-time runtime and its two real-time apps, for QEMU's
//! `mps2-an386` (Cortex-M4, CMSDK UARTs).
//!
//! # Why cortex-m-rt and a tiny interrupt-driven loop (not RTIC or Embassy)
//!
//! The firmware must build with Debian 12's rustc 1.85 (`-Zbuild-std=core`), the only compiler
//! here that can build `core` for `thumbv7em-none-eabihf`. cortex-m 0.7.10 and cortex-m-rt 0.7.7
//! are verified to build with it (docs: `/work/shared/notes/verified-facts.md`); they are two
//! small crates with no proc-macro tree beyond cortex-m-rt's attribute macros. RTIC 2 and
//! Embassy's executor would bring a larger dependency tree (proc macros, `portable-atomic`,
//! `critical-section` implementations, embassy-time drivers) whose versions would each have to
//! be pinned to 1.85-compatible releases; what they would buy here (priority-based
//! preemption, async tasks) is not needed by two apps whose work takes microseconds. The
//! design keeps their good idea instead: every decision is in the `no_std` crate `sphere-rt`
//! (host-tested), and this crate is only the hardware seam — interrupt handlers that move
//! bytes between UART registers and rings and count SysTick ticks, and a main loop that runs
//! what is ready and sleeps on WFI otherwise. Moving to RTIC later means moving the main
//! loop's three steps into tasks; `sphere-rt` stays as it is.
//!
//! # What runs
//!
//! * UART0 (0x40004000): the log, interrupt-driven transmit.
//! * UART1 (0x40005000, RX IRQ 2, TX IRQ 3): the inter-core link, interrupt-driven both ways,
//!   speaking `sphere-intercore` frames.
//! * SysTick: 1 ms ticks; sub-tick time from the SysTick counter.
//! * Echo app: echoes messages from its peer; `stats` returns link telemetry.
//! * Sampler app: a job every 10 ms with a 2 ms deadline (sample, filter, account); a report
//!   to the log every second and to its peer when the peer has granted credit.
#![no_std]
#![no_main]

mod uart;

use core::fmt::Write;
use core::sync::atomic::{AtomicU32, Ordering};

use cortex_m::peripheral::syst::SystClkSource;
use cortex_m::peripheral::{NVIC, SYST};
use cortex_m_rt::{entry, exception};
use sphere_intercore::ComponentId;
use sphere_rt::apps::{Echo, LinkControl, Sampler};
use sphere_rt::link::{App, BufWriter, Link};
use sphere_rt::time::{Instant, from_systick};
use sphere_rt::timer::{Periodic, TimerQueue};

use uart::{SharedRing, Uart};

/// The echo/telemetry app's component id (its manifest: `apps/echo/app_manifest.json`).
const ECHO_ID: ComponentId = id("6a1f0e2c-3b4d-4e5f-8a9b-0c1d2e3f4a51");
/// The sampler's component id (`apps/sampler/app_manifest.json`).
const SAMPLER_ID: ComponentId = id("6a1f0e2c-3b4d-4e5f-8a9b-0c1d2e3f4a52");
/// The high-level app both allow (`AllowedApplicationConnections`).
const PEER_ID: ComponentId = id("7f0c2e5a-61d4-4b8e-9a3f-2c51d7e80b14");

const fn id(text: &str) -> ComponentId {
    match ComponentId::parse(text) {
        Some(id) => id,
        None => panic!("bad component id"),
    }
}

/// mps2-an386's system clock, which SysTick counts (CLKSOURCE = core).
const CORE_HZ: u32 = 25_000_000;
const TICK_US: u32 = 1000;
const RELOAD: u32 = CORE_HZ / 1_000_000 * TICK_US - 1;

const SAMPLER_PERIOD_US: u32 = 10_000;
const SAMPLER_DEADLINE_US: u32 = 2_000;
const TIMER_SAMPLER: usize = 0;
const TIMER_HEARTBEAT: usize = 1;

static LOG_RX: SharedRing<1> = uart::ring();
static LOG_TX: SharedRing<1024> = uart::ring();
static LINK_RX: SharedRing<2048> = uart::ring();
static LINK_TX: SharedRing<2304> = uart::ring();
static LOG: Uart<1, 1024> = Uart::new(0x4000_4000, &LOG_RX, &LOG_TX);
static LINK: Uart<2048, 2304> = Uart::new(0x4000_5000, &LINK_RX, &LINK_TX);
static TICKS: AtomicU32 = AtomicU32::new(0);
static WAKEUPS: AtomicU32 = AtomicU32::new(0);

#[derive(Clone, Copy)]
struct Irq(u16);

// SAFETY: the numbers are mps2-an386's UART interrupt lines, all valid NVIC lines.
unsafe impl cortex_m::interrupt::InterruptNumber for Irq {
    fn number(self) -> u16 {
        self.0
    }
}

const UART0_TX_IRQ: Irq = Irq(1);
const UART1_RX_IRQ: Irq = Irq(2);
const UART1_TX_IRQ: Irq = Irq(3);

/// Now, from the tick count and the SysTick counter (main loop only: retries across a tick).
/// A counter reading of 0 is the wrap itself, ambiguous between the old tick and the new one
/// (QEMU shows it for a while after the interrupt): read again.
fn now() -> Instant {
    loop {
        let ticks = TICKS.load(Ordering::Acquire);
        let current = SYST::get_current();
        if current != 0 && TICKS.load(Ordering::Acquire) == ticks {
            return from_systick(ticks, TICK_US, RELOAD, current);
        }
    }
}

/// Logs a line on UART0, prefixed with the time in seconds. A full log ring drops the line
/// rather than stalling real-time work.
macro_rules! log {
    ($($arg:tt)*) => {{
        let t = now().0;
        let mut line = [0u8; 256];
        let mut w = BufWriter::new(&mut line);
        let _ = write!(w, "[{:4}.{:03}] ", t / 1_000_000, t / 1000 % 1000);
        let _ = write!(w, $($arg)*);
        let _ = w.write_str("\n");
        let n = w.len();
        LOG.send(&line[..n]);
    }};
}

#[entry]
fn main() -> ! {
    let mut core = cortex_m::Peripherals::take().unwrap();
    LOG.init(false);
    LINK.init(true);
    core.SYST.set_clock_source(SystClkSource::Core);
    core.SYST.set_reload(RELOAD);
    core.SYST.clear_current();
    core.SYST.enable_interrupt();
    core.SYST.enable_counter();
    // SAFETY: the handlers for these lines only touch their UART and its rings, in critical
    // sections; nothing relies on them being masked.
    unsafe {
        NVIC::unmask(UART0_TX_IRQ);
        NVIC::unmask(UART1_RX_IRQ);
        NVIC::unmask(UART1_TX_IRQ);
    }

    let mut echo = Echo::new(ECHO_ID, PEER_ID);
    let mut sampler = Sampler::new(SAMPLER_ID, PEER_ID, SAMPLER_PERIOD_US, SAMPLER_DEADLINE_US);
    sampler.report_every = 100;
    let mut control = LinkControl::new();
    let mut link = Link::new();
    // Bytes still to echo raw (the benchmark's baselines; see LinkControl's RawEcho), and
    // for a message echo the message being collected.
    let mut raw_echo: u32 = 0;
    let mut raw_message = [0u8; sphere_intercore::MAX_PAYLOAD];
    let mut raw_message_len: usize = 0;
    let mut raw_held: usize = 0;
    let mut timers: TimerQueue<2> = TimerQueue::new();
    // Releases on tick boundaries, so a job starts as soon as its tick's interrupt wakes us.
    let start = Instant((now().0 / TICK_US + 1) * TICK_US);
    timers.set(TIMER_SAMPLER, Periodic::new(start.add_us(SAMPLER_PERIOD_US), SAMPLER_PERIOD_US));
    timers.set(TIMER_HEARTBEAT, Periodic::new(start.add_us(1_000_000), 1_000_000));

    log!("m4: OpenSphere real-time runtime up (cortex-m-rt, WFI when idle)");
    log!("m4: echo app {ECHO_ID} on UART1, peer {PEER_ID}");
    log!("m4: sampler app {SAMPLER_ID}: period {SAMPLER_PERIOD_US} us, deadline {SAMPLER_DEADLINE_US} us");

    let mut sink = |bytes: &[u8]| LINK.send(bytes);
    let mut report = [0u8; 256];
    let mut chunk = [0u8; 128];
    let mut last_delivered = 0;
    loop {
        // 1. The link: bytes from the RX ring into the decoder, frames to the apps.
        loop {
            let n = LINK.receive(&mut chunk);
            if n == 0 {
                break;
            }
            let mut fed = 0;
            if raw_echo > 0 {
                fed = n.min(raw_echo as usize);
                raw_echo -= fed as u32;
                // The benchmark waits for each echo, so the TX ring has room; spin if not.
                if raw_message_len == 0 {
                    while !LINK.send(&chunk[..fed]) {}
                } else {
                    for &byte in &chunk[..fed] {
                        raw_message[raw_held] = byte;
                        raw_held += 1;
                        if raw_held == raw_message_len {
                            while !LINK.send(&raw_message[..raw_held]) {}
                            raw_held = 0;
                        }
                    }
                }
            }
            while fed < n {
                fed += link.feed(&chunk[fed..n]);
                let mut apps: [&mut dyn App; 3] = [&mut echo, &mut sampler, &mut control];
                link.poll(&mut apps, now(), &mut sink);
                if let Some(request) = control.take_raw_echo() {
                    // The requester sends raw bytes only after our ready reply, so none of
                    // them can be in this chunk or the decoder.
                    raw_echo = request.bytes;
                    raw_message_len = usize::from(request.message);
                    raw_held = 0;
                }
            }
        }
        let delivered = link.stats().delivered;
        if delivered != last_delivered {
            last_delivered = delivered;
            let s = link.stats();
            log!(
                "link: delivered={} sent={} skipped_bytes={} bad_frames={} echoed={}",
                s.delivered,
                s.sent,
                s.skipped_bytes,
                s.bad_frames,
                echo.echoed
            );
        }

        // 2. Timers.
        while let Some((timer, release, skipped)) = timers.poll(now()) {
            match timer {
                TIMER_SAMPLER => {
                    let misses = sampler.monitor.misses;
                    let report_due = sampler.run_job(release, skipped, &mut now);
                    if sampler.monitor.misses != misses {
                        log!(
                            "sampler: DEADLINE MISS (misses={}, response {} us)",
                            sampler.monitor.misses,
                            sampler.monitor.worst_response_us
                        );
                    }
                    if report_due {
                        let n = sampler.report(&mut report);
                        link.send(&mut sampler.conn, &report[..n], &mut sink);
                    }
                }
                _ => {
                    let n = sampler.report(&mut report);
                    let text = core::str::from_utf8(&report[..n]).unwrap_or("?");
                    log!("{text} wakeups={}", WAKEUPS.swap(0, Ordering::Relaxed));
                }
            }
        }

        // 3. Sleep until the next interrupt, unless bytes arrived meanwhile. WFI wakes on a
        // pending interrupt even with interrupts masked, so nothing is missed between the
        // check and the sleep.
        cortex_m::interrupt::free(|cs| {
            if !LINK.rx_pending(cs) {
                cortex_m::asm::wfi();
            }
        });
        WAKEUPS.fetch_add(1, Ordering::Relaxed);
    }
}

#[exception]
fn SysTick() {
    // The counter reloads on the cycle after it reaches 0, before this handler runs on real
    // hardware; QEMU can run the handler while it still reads the end of the old period, which
    // would put `now()` up to a tick ahead. Wait (boundedly) for the reload.
    for _ in 0..10_000 {
        if SYST::get_current() > RELOAD / 2 {
            break;
        }
    }
    TICKS.fetch_add(1, Ordering::Release);
}

/// Device interrupts (cortex-m-rt's default vector table points them all here).
#[exception]
unsafe fn DefaultHandler(irqn: i16) {
    match irqn {
        1 => LOG.on_tx_interrupt(),
        2 => LINK.on_rx_interrupt(),
        3 => LINK.on_tx_interrupt(),
        _ => {}
    }
}

#[exception]
unsafe fn HardFault(_frame: &cortex_m_rt::ExceptionFrame) -> ! {
    LOG.write_blocking(b"m4: HARD FAULT\n");
    loop {
        cortex_m::asm::wfi();
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    cortex_m::interrupt::disable();
    LOG.write_blocking(b"m4: PANIC");
    if let Some(location) = info.location() {
        let mut line = [0u8; 96];
        let mut w = BufWriter::new(&mut line);
        let _ = write!(w, " at {}:{}", location.file(), location.line());
        let n = w.len();
        LOG.write_blocking(&line[..n]);
    }
    LOG.write_blocking(b"\n");
    loop {
        cortex_m::asm::wfi();
    }
}
