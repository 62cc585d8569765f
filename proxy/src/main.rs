//! `postsub`: see `postsub --help`.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    postsub_proxy::cli::main().await
}
