//! End-to-end tests: drive the real `runnel` binary.

mod cases;
mod cli;
mod harness;
mod log_cli;
mod web;
