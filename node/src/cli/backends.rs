//! `montana backends`: what this build has and what this host can run.

use clap::Args as ClapArgs;
use serde::Serialize;

use super::{print_json, registry, CliError};

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// Print JSON (a list of backends).
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct BackendRow {
    name: &'static str,
    kind: montana_vdf::BackendKind,
    available: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    lanes: usize,
    supports: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    adapter: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    api: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    driver: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    device_type: Option<String>,
}

pub fn run(args: Args) -> Result<(), CliError> {
    let reg = registry()?;
    // Shows what this host has, a software GPU adapter included.
    reg.name_all();
    let rows: Vec<BackendRow> = reg
        .all()
        .iter()
        .map(|b| {
            let availability = reg.availability(b.as_ref());
            let adapter = b.adapter();
            BackendRow {
                name: b.name(),
                kind: b.kind(),
                available: availability.is_available(),
                reason: availability.reason().map(str::to_string),
                lanes: b.lanes(),
                supports: b.supported_pairs(),
                adapter: adapter.as_ref().map(|a| a.name.clone()),
                api: adapter.as_ref().map(|a| a.api.clone()),
                driver: adapter.as_ref().map(|a| a.driver.clone()),
                device_type: adapter.as_ref().map(|a| a.device_type.clone()),
            }
        })
        .collect();
    if args.json {
        print_json(&rows);
        return Ok(());
    }
    println!(
        "{:<8} {:<7} {:<10} {:>5}  supports",
        "backend", "kind", "available", "lanes"
    );
    for r in &rows {
        println!(
            "{:<8} {:<7} {:<10} {:>5}  {}",
            r.name,
            r.kind.name(),
            if r.available { "yes" } else { "no" },
            r.lanes,
            r.supports.join(" ")
        );
        if let Some(reason) = &r.reason {
            println!("{:8} why not: {reason}", "");
        }
        if let Some(adapter) = &r.adapter {
            println!(
                "{:8} adapter: {adapter} ({}, {}, driver {})",
                "",
                r.api.as_deref().unwrap_or("?"),
                r.device_type.as_deref().unwrap_or("?"),
                r.driver.as_deref().unwrap_or("?")
            );
        }
    }
    Ok(())
}
