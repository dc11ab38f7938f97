//! `dsu-kv`: a Redis-protocol (RESP2) key-value server whose whole keyspace and statistics
//! live in dsu shared globals, so that a new version of the server can start beside the
//! running one, see every key at once, and take over without a failed request.
//!
//! The crate is a library shared by three programs, `kv_v1`, `kv_v2` and `kv_v3`
//! (`src/bin/`), each of which declares its own set of globals with [`dsu::global!`] and
//! calls [`server::main`]:
//!
//! | program | globals | commands |
//! | --- | --- | --- |
//! | `kv_v1` | `kv::KEYSPACE` ([`keyspace::HeapKeyspaceV1`], in the shared heap), `kv::STATS` ([`stats::Stats`]) | Redis's five types ([`engine`]) |
//! | `kv_v2` | v1's + `kv::CMD_STATS` ([`stats::CmdCalls`], new: starts at zero) | v1's + LMOVE RPOPLPUSH SMOVE HINCRBY HLEN HEXISTS |
//! | `kv_v3` | `kv::KEYSPACE` migrated to [`keyspace::HeapKeyspaceV3`] (lists as rings, [`migrate`]), `kv::STATS`, `kv::CMD_STATS` migrated to [`stats::CmdStats`] | v2's; INFO shows time per command |
//!
//! See `examples/kv/README.md` for the update procedure.

pub mod activation;
pub mod alloc;
pub mod commands;
pub mod difftest;
pub mod engine;
pub mod event_loop;
pub mod forward;
pub mod keyspace;
pub mod migrate;
pub mod resp;
pub mod server;
pub mod stats;
pub mod sync;
