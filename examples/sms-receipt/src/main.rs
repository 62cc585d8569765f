//! `postsub-sms`: the whole `postsub` command line with one more task kind, `sms_receipt`.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    postsub_proxy::main(|registry, targets| {
        registry.register(postsub_sms_receipt::SmsReceipt::new(targets));
    })
    .await
}
