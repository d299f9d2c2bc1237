//! The LAN commands (seed 004 tasks 6 and 7): [`broadcast`] sends and
//! listens to UDP broadcasts; [`discover`] finds the devices that run
//! [`respond`] (or the seed's callee) on every segment this host is on,
//! over IPv4 broadcast and IPv6 link-local multicast. [`protocol`] holds
//! the discovery wire format and the anti-amplification rules.

pub mod broadcast;
pub mod discover;
pub mod protocol;
pub mod respond;
