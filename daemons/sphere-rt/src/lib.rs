//! The hardware-free half of OpenSphere's real-time (Cortex-M4) runtime.
//!
//! The firmware (`daemons/sphere-rt-m4`, built by `scripts/build-m4.sh`) is a thin hardware seam:
//! interrupt handlers move bytes between UART registers and the [`ring`] buffers and count
//! SysTick ticks; everything that decides anything lives here, in `no_std` code that
//! `cargo test --workspace` runs on the host, as in Embassy and RTIC:
//!
//! * [`ring`]: fixed-size byte rings between interrupt handlers and the main loop;
//! * [`time`]: wrapping microsecond instants;
//! * [`timer`]: a small timer queue (which task is due next, and how long the core may sleep);
//! * [`deadline`]: release/deadline accounting for periodic work, counting misses;
//! * [`link`]: the inter-core endpoint: decodes frames from the link, routes them to apps by
//!   component id, applies credit-based backpressure and encodes replies;
//! * [`apps`]: the two real-time apps' logic (echo/telemetry, periodic sampler).
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod apps;
pub mod deadline;
pub mod link;
pub mod ring;
pub mod time;
pub mod timer;
