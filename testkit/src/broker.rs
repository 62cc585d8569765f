//! A throwaway RabbitMQ vhost per test.
//!
//! The vhost is made with `rabbitmqctl` (the local server's own tool). Where that is not
//! available the test runs on the default vhost, still isolated by its unique queue prefix.

use std::process::Command;

/// Base AMQP URL: `TEST_AMQP_URL`, else the local server.
fn base_url() -> String {
    std::env::var("TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672".into())
}

/// A fresh vhost and queue prefix, deleted when this value drops.
#[derive(Debug)]
pub struct TestBroker {
    /// AMQP URL naming the vhost.
    pub url: String,
    /// A queue-name prefix no other test uses.
    pub prefix: String,
    vhost: Option<String>,
}

fn rabbitmqctl(args: &[&str]) -> bool {
    Command::new("rabbitmqctl")
        .args(args)
        .output()
        .is_ok_and(|out| out.status.success())
}

impl TestBroker {
    /// Creates the vhost (or falls back to `/`) and a unique prefix.
    pub fn create() -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let prefix = format!("test_{}", &id[..12]);
        let vhost = format!("postsub_{prefix}");
        let base = base_url();
        let user = base
            .strip_prefix("amqp://")
            .and_then(|rest| rest.split_once(':'))
            .map_or("guest", |(user, _)| user)
            .to_owned();
        if rabbitmqctl(&["add_vhost", &vhost])
            && rabbitmqctl(&["set_permissions", "-p", &vhost, &user, ".*", ".*", ".*"])
        {
            Self {
                url: format!("{base}/{vhost}"),
                prefix,
                vhost: Some(vhost),
            }
        } else {
            Self {
                url: format!("{base}/%2f"),
                prefix,
                vhost: None,
            }
        }
    }

    /// Applies a policy (a JSON definition, say `{"queue-version":2}`) to every queue of
    /// this broker's own vhost. False when there is no own vhost or `rabbitmqctl` refused.
    pub fn set_queue_policy(&self, name: &str, definition: &str) -> bool {
        self.vhost.as_deref().is_some_and(|vhost| {
            rabbitmqctl(&[
                "set_policy",
                "-p",
                vhost,
                name,
                ".*",
                definition,
                "--apply-to",
                "queues",
            ])
        })
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if let Some(vhost) = &self.vhost {
            rabbitmqctl(&["delete_vhost", vhost]);
        }
    }
}
