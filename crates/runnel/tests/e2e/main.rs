//! End-to-end tests: drive the real `runnel` binary.

mod camera;
mod cases;
mod checkpoints;
mod cli;
mod distributed;
mod fuzz;
mod harness;
mod hosting;
mod kafka;
mod log_cli;
mod mqtt;
mod nats;
mod nexmark;
mod planning;
mod postgres;
mod quality;
mod query;
mod shell;
mod vision;
mod warehouse;
mod web;
