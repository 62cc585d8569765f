//! `postsub`: see `postsub --help`. A binary with task kinds of its own is the same few
//! lines, registering them in the closure (docs/writing-a-task.md).

#[tokio::main]
async fn main() -> std::process::ExitCode {
    postsub_proxy::main(|_registry, _targets| {}).await
}
