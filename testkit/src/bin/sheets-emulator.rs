//! `sheets-emulator [DIR]`: the tests' Google Sheets API emulator as a process, to try the
//! `google_sheets` task (or check a run by hand) with no Google account. Writes a
//! service-account key for it to `DIR` (default: the current directory), prints the
//! environment a `postsub` process needs to use it, and serves until Ctrl-C or SIGTERM,
//! when it prints every tab's rows as one JSON line per spreadsheet
//! (`{"spreadsheet_id", "title", "tabs": {"Responses": [[…], …]}}`) and exits.

use std::path::PathBuf;

use postsub_testkit::SheetsEmulator;
use serde_json::{Map, Value, json};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let dir = std::env::args()
        .nth(1)
        .map_or_else(|| PathBuf::from("."), PathBuf::from);
    if !dir.is_dir() {
        eprintln!("error: `{}` is not a directory", dir.display());
        return std::process::ExitCode::FAILURE;
    }
    let emulator = SheetsEmulator::start().await;
    let key = emulator.write_service_account_key(&dir);
    let key = key.canonicalize().unwrap_or(key);
    eprintln!("Sheets emulator serving; give postsub this environment (Ctrl-C prints the sheets):");
    println!(
        "export GOOGLE_SHEETS_BASE_URL={}",
        emulator.sheets_base_url()
    );
    println!("export GOOGLE_DRIVE_BASE_URL={}", emulator.drive_base_url());
    println!("export GOOGLE_APPLICATION_CREDENTIALS={}", key.display());
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    for (id, title) in emulator.spreadsheets() {
        let tabs: Map<String, Value> = emulator
            .tabs(&id)
            .into_iter()
            .map(|tab| {
                let rows = emulator.values(&id, &tab);
                (tab, json!(rows))
            })
            .collect();
        println!(
            "{}",
            json!({"spreadsheet_id": id, "title": title, "tabs": tabs})
        );
    }
    std::process::ExitCode::SUCCESS
}
