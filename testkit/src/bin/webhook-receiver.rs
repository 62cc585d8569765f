//! `webhook-receiver [ADDR] [SECRET]`: a local endpoint to try postsub's `webhook` task
//! against. Listens on `ADDR` (default `127.0.0.1:8099`) at `/hook`, checks each delivery's
//! Standard Webhooks signature with `SECRET` (default: the README's example secret),
//! answers 200 and prints the delivery as one JSON line.

use postsub_testkit::WebhookReceiver;

const README_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8099".into());
    let secret = args.next().unwrap_or_else(|| README_SECRET.into());
    let addr = match addr.parse() {
        Ok(addr) => addr,
        Err(err) => {
            eprintln!("error: `{addr}` is not an address such as 127.0.0.1:8099 ({err})");
            return std::process::ExitCode::FAILURE;
        }
    };
    match WebhookReceiver::listen(addr, &secret, true).await {
        Ok(receiver) => {
            eprintln!("receiving webhooks at {} (Ctrl-C stops)", receiver.url);
            let _ = tokio::signal::ctrl_c().await;
            std::process::ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: cannot listen on {addr}: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}
