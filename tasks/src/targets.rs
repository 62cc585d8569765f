//! Which network addresses the outbound calls a binding chooses (a webhook's URL) may reach.
//!
//! A binding is set by whoever holds an admin token, and the worker makes its calls from
//! inside the deployment's network, where it could reach what no caller should: the cloud's
//! metadata service (`169.254.169.254`), the database, internal admin pages. So by default
//! such calls reach public addresses only. The check runs twice: on the URL when the binding
//! is created (an IP address or `localhost` in it is refused at once), and on every address
//! a hostname resolves to when the call connects (so a name that resolves to a private
//! address, now or after a DNS change, is refused too). Ranges can be allowed explicitly
//! (`POSTSUB_ALLOW_TARGETS`).

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    str::FromStr,
    sync::Arc,
};

use ipnet::IpNet;
use reqwest::{
    Url,
    dns::{Addrs, Name, Resolve, Resolving},
};

/// The address ranges outbound calls of bindings may reach besides public ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetPolicy {
    allowed: Arc<[IpNet]>,
}

/// A target the policy refuses; the message names the address and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{target} is in {range}, which bindings may not call; an operator can allow it with \
     POSTSUB_ALLOW_TARGETS"
)]
pub struct RefusedTarget {
    /// The host or address refused.
    pub target: String,
    /// The range it is in, described.
    pub range: &'static str,
}

/// The ranges that are not the public internet, with what they are.
const SPECIAL: &[(&str, &str)] = &[
    ("0.0.0.0/8", "0.0.0.0/8 (this network, unspecified)"),
    ("10.0.0.0/8", "10.0.0.0/8 (private network)"),
    ("100.64.0.0/10", "100.64.0.0/10 (carrier-grade NAT)"),
    ("127.0.0.0/8", "127.0.0.0/8 (loopback)"),
    (
        "169.254.0.0/16",
        "169.254.0.0/16 (link-local, cloud metadata)",
    ),
    ("172.16.0.0/12", "172.16.0.0/12 (private network)"),
    ("192.0.0.0/24", "192.0.0.0/24 (IETF protocol assignments)"),
    ("192.168.0.0/16", "192.168.0.0/16 (private network)"),
    ("198.18.0.0/15", "198.18.0.0/15 (benchmarking)"),
    ("224.0.0.0/4", "224.0.0.0/4 (multicast)"),
    ("240.0.0.0/4", "240.0.0.0/4 (reserved, broadcast)"),
    ("::/128", "::/128 (unspecified)"),
    ("::1/128", "::1/128 (loopback)"),
    ("64:ff9b:1::/48", "64:ff9b:1::/48 (local-use NAT64)"),
    ("fc00::/7", "fc00::/7 (unique local)"),
    ("fe80::/10", "fe80::/10 (link-local)"),
    ("ff00::/8", "ff00::/8 (multicast)"),
];

impl TargetPolicy {
    /// Public addresses only: the default.
    pub fn public_only() -> Self {
        Self::default()
    }

    /// Public addresses and `allowed`.
    pub fn allowing(allowed: impl IntoIterator<Item = IpNet>) -> Self {
        Self {
            allowed: allowed.into_iter().collect(),
        }
    }

    /// Public addresses and loopback: `postsub dev`'s default, so a local receiver works.
    pub fn dev() -> Self {
        Self::allowing(Self::loopback())
    }

    /// This policy with `more` ranges allowed too.
    pub fn and(&self, more: impl IntoIterator<Item = IpNet>) -> Self {
        Self::allowing(self.allowed.iter().copied().chain(more))
    }

    /// The loopback ranges.
    pub fn loopback() -> [IpNet; 2] {
        [
            IpNet::from_str("127.0.0.0/8").expect("a range"),
            IpNet::from(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        ]
    }

    /// The ranges allowed besides public addresses.
    pub fn allowed(&self) -> &[IpNet] {
        &self.allowed
    }

    /// Whether a call may connect to `ip`.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), RefusedTarget> {
        // An IPv4 address written as IPv6 (`::ffff:127.0.0.1`) is that IPv4 address.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        if self.allowed.iter().any(|net| net.contains(&ip)) {
            return Ok(());
        }
        match SPECIAL.iter().find(|(net, _)| {
            IpNet::from_str(net)
                .expect("the special ranges parse")
                .contains(&ip)
        }) {
            Some((_, range)) => Err(RefusedTarget {
                target: ip.to_string(),
                range,
            }),
            None => Ok(()),
        }
    }

    /// An HTTP client for the calls a binding chooses: it connects only to addresses this
    /// policy allows (hostnames checked as they resolve), follows no redirect (a 3xx could
    /// lead anywhere) and names itself `postsub/<version>`. Pair it with
    /// [`TargetPolicy::check_url`] on the binding's URL, and [`refused_in`] on its errors.
    pub fn http_client(&self) -> reqwest::Client {
        crate::outbound::client(self)
    }

    /// Whether `url` may be called, as far as it tells before any DNS lookup: an address in
    /// it is checked, and `localhost` names are loopback. Other hostnames are checked when
    /// they resolve (see [`TargetPolicy::resolver`]).
    pub fn check_url(&self, url: &Url) -> Result<(), RefusedTarget> {
        let Some(host) = url.host_str() else {
            return Ok(());
        };
        if let Ok(ip) = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            return self.check_ip(ip);
        }
        let name = host.trim_end_matches('.').to_ascii_lowercase();
        if name == "localhost" || name.ends_with(".localhost") {
            return self
                .check_ip(IpAddr::V4(Ipv4Addr::LOCALHOST))
                .map_err(|refused| RefusedTarget {
                    target: name,
                    ..refused
                });
        }
        Ok(())
    }

    /// A DNS resolver for reqwest that resolves as the system does and refuses a name any
    /// of whose addresses the policy refuses (a name that also resolves to a private
    /// address is refused whole, rather than left to chance).
    pub fn resolver(&self) -> Arc<dyn Resolve> {
        Arc::new(CheckedResolver {
            policy: self.clone(),
        })
    }
}

impl fmt::Display for TargetPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.allowed.is_empty() {
            return f.write_str("public addresses only");
        }
        let allowed: Vec<String> = self.allowed.iter().map(ToString::to_string).collect();
        write!(f, "public addresses and {}", allowed.join(", "))
    }
}

/// Parses `POSTSUB_ALLOW_TARGETS`: ranges (`10.1.0.0/16`) or addresses, comma-separated.
pub fn parse_ranges(text: &str) -> Result<Vec<IpNet>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| {
            IpNet::from_str(part)
                .or_else(|_| IpAddr::from_str(part).map(IpNet::from))
                .map_err(|_| {
                    format!("`{part}` is neither an address range (10.1.0.0/16) nor an address")
                })
        })
        .collect()
}

struct CheckedResolver {
    policy: TargetPolicy,
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            for addr in &addrs {
                policy
                    .check_ip(addr.ip())
                    .map_err(|refused| RefusedTarget {
                        target: format!("{host} (resolves to {})", addr.ip()),
                        ..refused
                    })?;
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// The [`RefusedTarget`] somewhere in `err`'s causes, if a call failed for that.
pub fn refused_in<'e>(err: &'e (dyn std::error::Error + 'static)) -> Option<&'e RefusedTarget> {
    let mut cause = Some(err);
    while let Some(error) = cause {
        if let Some(refused) = error.downcast_ref::<RefusedTarget>() {
            return Some(refused);
        }
        cause = error.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    #[test]
    fn private_and_special_addresses_are_refused_and_public_ones_pass() {
        let policy = TargetPolicy::public_only();
        for target in [
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]:5432/",
            "http://10.0.0.7/",
            "http://192.168.1.1/",
            "http://172.20.0.1/",
            "http://100.64.0.1/",
            "http://0.0.0.0/",
            "http://[fd00::1]/",
            "http://[fe80::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://224.0.0.1/",
            "http://255.255.255.255/",
            "http://localhost:8080/",
            "http://api.localhost/",
        ] {
            assert!(policy.check_url(&url(target)).is_err(), "{target}");
        }
        for target in [
            "https://93.184.215.14/",
            "https://[2606:4700::1111]/",
            "https://example.com/",
        ] {
            assert!(policy.check_url(&url(target)).is_ok(), "{target}");
        }
        let refused = policy
            .check_url(&url("http://169.254.169.254/"))
            .unwrap_err();
        assert_eq!(
            refused.to_string(),
            "169.254.169.254 is in 169.254.0.0/16 (link-local, cloud metadata), which bindings may \
             not call; an operator can allow it with POSTSUB_ALLOW_TARGETS"
        );
    }

    #[test]
    fn allowed_ranges_pass() {
        let policy = TargetPolicy::allowing(parse_ranges("127.0.0.0/8, 10.1.0.0/16,::1").unwrap());
        assert!(policy.check_url(&url("http://127.0.0.1:9000/")).is_ok());
        assert!(policy.check_url(&url("http://localhost/")).is_ok());
        assert!(policy.check_url(&url("http://10.1.2.3/")).is_ok());
        assert!(policy.check_url(&url("http://[::1]/")).is_ok());
        assert!(policy.check_url(&url("http://10.2.0.1/")).is_err());
        assert!(parse_ranges("10.1.0.0/99").is_err());
        assert_eq!(
            TargetPolicy::allowing(TargetPolicy::loopback())
                .allowed()
                .len(),
            2
        );
    }

    #[tokio::test]
    async fn a_name_that_resolves_to_a_refused_address_is_refused_when_resolved() {
        let resolver = TargetPolicy::public_only().resolver();
        let err = resolver
            .resolve(Name::from_str("localhost").unwrap())
            .await
            .err()
            .expect("localhost resolves to loopback");
        let refused = refused_in(err.as_ref()).expect("a RefusedTarget");
        assert!(
            refused.target.starts_with("localhost (resolves to "),
            "{refused}"
        );
        let allowed = TargetPolicy::allowing(TargetPolicy::loopback()).resolver();
        assert!(
            allowed
                .resolve(Name::from_str("localhost").unwrap())
                .await
                .is_ok()
        );
    }
}
