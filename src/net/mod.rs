//! Network plumbing shared by components that listen or connect: TLS settings and their
//! reloading, and the accept loop with connection limits and timeouts.

pub mod listener;
pub mod nats;
pub mod tls;
