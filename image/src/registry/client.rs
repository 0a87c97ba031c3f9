//! The client's transport: endpoints and schemes, the auth handshake (challenge, token,
//! basic), the token cache, and the retry loop every request goes through.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use reqwest::header::{AUTHORIZATION, HeaderMap, WWW_AUTHENTICATE};
use reqwest::{RequestBuilder, Response, Url};

use super::credentials::Auth;
use super::error::{Place, RegistryMessage};
use super::{ClientOptions, RegistryError};
use crate::{Digest, ImageRef};

/// Largest error or token answer read into memory.
const SMALL_BODY_LIMIT: u64 = 1 << 20;

/// A client for OCI distribution registries. Cheap to clone: clones share one connection
/// pool, token cache and credential cache.
#[derive(Clone)]
pub struct RegistryClient {
    inner: Arc<Inner>,
}

struct Inner {
    /// Built on first use: loading the system's root certificates takes a few
    /// milliseconds, and most builds never talk to a registry.
    http: OnceLock<reqwest::Client>,
    options: ClientOptions,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// How each registry host wants to be authenticated, learnt from `GET /v2/`.
    challenges: HashMap<String, Challenge>,
    /// Bearer tokens by (host, scopes) with their expiry.
    tokens: HashMap<(String, String), (String, Instant)>,
    /// Credentials looked up so far, by host.
    auths: HashMap<String, Option<Auth>>,
    /// Repositories known to hold a blob, by (host, digest): mount sources for pushes.
    holders: HashMap<(String, Digest), BTreeSet<String>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Challenge {
    None,
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

impl RegistryClient {
    /// A client with `options`.
    pub fn new(options: ClientOptions) -> Result<RegistryClient, RegistryError> {
        Ok(RegistryClient {
            inner: Arc::new(Inner {
                http: OnceLock::new(),
                options,
                state: Mutex::new(State::default()),
            }),
        })
    }

    /// The options the client was made with.
    pub fn options(&self) -> &ClientOptions {
        &self.inner.options
    }

    /// The HTTP client, built the first time it is needed.
    pub(super) fn http(&self) -> Result<&reqwest::Client, RegistryError> {
        if let Some(http) = self.inner.http.get() {
            return Ok(http);
        }
        let options = &self.inner.options;
        let http = reqwest::Client::builder()
            .user_agent(options.user_agent.clone())
            .connect_timeout(options.connect_timeout)
            .read_timeout(options.read_timeout)
            .build()
            .map_err(RegistryError::Client)?;
        Ok(self.inner.http.get_or_init(|| http))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state is a set of caches; one left half-updated by a panic is still usable.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether `host` is spoken to over plain HTTP: loopback addresses and hosts listed
    /// in the options' insecure registries.
    pub fn is_plain_http(&self, host: &str) -> bool {
        let bare = host_without_port(host);
        bare == "localhost"
            || bare.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
            || bare.parse::<Ipv6Addr>().is_ok_and(|ip| ip.is_loopback())
            || self
                .inner
                .options
                .insecure_registries
                .iter()
                .any(|h| h == host || h == bare)
    }

    /// `scheme://api-host/v2/` followed by `rest`.
    pub(super) fn url(&self, host: &str, rest: &str) -> String {
        let scheme = if self.is_plain_http(host) {
            "http"
        } else {
            "https"
        };
        let api_host = match host {
            crate::reference::DEFAULT_DOMAIN | "index.docker.io" => "registry-1.docker.io",
            other => other,
        };
        format!("{scheme}://{api_host}/v2/{rest}")
    }

    /// Runs `op` until it succeeds, fails for good, or the attempts are spent, sleeping
    /// with exponential backoff in between. `op` gets the attempt number (from 1).
    pub(super) async fn retrying<T, F, Fut>(&self, mut op: F) -> Result<T, RegistryError>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, RegistryError>>,
    {
        let mut attempt = 1;
        loop {
            match op(attempt).await {
                Err(e) if e.is_transient() && attempt < self.inner.options.retry.attempts => {
                    tokio::time::sleep(self.inner.options.retry.delay(attempt)).await;
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    /// Sends a request built by `build` (called again for each try) with retries.
    pub(super) async fn request(
        &self,
        place: &Place,
        scopes: &[String],
        what: &str,
        build: &(dyn Fn() -> RequestBuilder + Send + Sync),
    ) -> Result<Response, RegistryError> {
        self.retrying(|attempt| self.send(place, scopes, what, attempt, build))
            .await
    }

    /// Sends a request once (twice when a cached token was refused), authorised for
    /// `scopes`. Statuses 401/403 become [`RegistryError::Unauthorized`], 429 and 5xx
    /// [`RegistryError::Status`]; every other answer is returned.
    pub(super) async fn send(
        &self,
        place: &Place,
        scopes: &[String],
        what: &str,
        attempt: u32,
        build: &(dyn Fn() -> RequestBuilder + Send + Sync),
    ) -> Result<Response, RegistryError> {
        let mut refused = false;
        loop {
            let authorization = self.authorization(place, scopes).await?;
            let mut request = build();
            if let Some(value) = authorization {
                request = request.header(AUTHORIZATION, value);
            }
            let response = request
                .send()
                .await
                .map_err(|source| RegistryError::Transport {
                    place: place.clone(),
                    what: what.to_owned(),
                    attempts: attempt,
                    source,
                })?;
            let status = response.status().as_u16();
            if status == 401 && !refused {
                // The token may have expired or the registry may have changed its mind
                // about how to authenticate: learn again and try once more.
                refused = true;
                self.forget_auth(&place.registry);
                continue;
            }
            return check_status(place, what, response).await;
        }
    }

    /// The `Authorization` value for requests to `place` needing `scopes`.
    pub(super) async fn authorization(
        &self,
        place: &Place,
        scopes: &[String],
    ) -> Result<Option<String>, RegistryError> {
        let host = &place.registry;
        match self.challenge(host).await? {
            Challenge::None => Ok(None),
            Challenge::Basic => Ok(match self.credentials_for(host).await? {
                Some(Auth::Basic { username, password }) => {
                    Some(basic_header(&username, &password))
                }
                _ => None,
            }),
            Challenge::Bearer { realm, service } => {
                let key = (host.clone(), scopes.join(" "));
                if let Some((token, expiry)) = self.state().tokens.get(&key)
                    && *expiry > Instant::now()
                {
                    return Ok(Some(format!("Bearer {token}")));
                }
                let (token, lifetime) = self
                    .fetch_token(place, &realm, service.as_deref(), scopes)
                    .await?;
                let header = format!("Bearer {token}");
                self.state()
                    .tokens
                    .insert(key, (token, Instant::now() + lifetime));
                Ok(Some(header))
            }
        }
    }

    fn forget_auth(&self, host: &str) {
        let mut state = self.state();
        state.challenges.remove(host);
        state.tokens.retain(|(h, _), _| h != host);
    }

    /// How `host` wants to be authenticated, asking `GET /v2/` the first time.
    async fn challenge(&self, host: &str) -> Result<Challenge, RegistryError> {
        let http = self.http()?;
        if let Some(c) = self.state().challenges.get(host) {
            return Ok(c.clone());
        }
        let place = Place {
            registry: host.to_owned(),
            repository: None,
        };
        let url = self.url(host, "");
        let what = "GET /v2/";
        let (place_ref, url_ref) = (&place, &url);
        let challenge = self
            .retrying(|attempt| async move {
                let (place, url) = (place_ref, url_ref);
                let response =
                    http.get(url)
                        .send()
                        .await
                        .map_err(|source| RegistryError::Transport {
                            place: place.clone(),
                            what: what.to_owned(),
                            attempts: attempt,
                            source,
                        })?;
                if response.status().as_u16() == 401 {
                    return parse_challenge(response.headers()).ok_or_else(|| {
                        RegistryError::BadHeader {
                            place: place.clone(),
                            what: what.to_owned(),
                            header: "WWW-Authenticate",
                        }
                    });
                }
                check_status(place, what, response).await?;
                Ok(Challenge::None)
            })
            .await?;
        self.state()
            .challenges
            .insert(host.to_owned(), challenge.clone());
        Ok(challenge)
    }

    async fn credentials_for(&self, host: &str) -> Result<Option<Auth>, RegistryError> {
        if let Some(a) = self.state().auths.get(host) {
            return Ok(a.clone());
        }
        let credentials = self.inner.options.credentials.clone();
        let h = host.to_owned();
        // Credential helpers are programs: run them off the async threads.
        let auth = match tokio::task::spawn_blocking(move || credentials.lookup(&h)).await {
            Ok(result) => result?,
            Err(join) => {
                return Err(RegistryError::HelperSpawn {
                    helper: "lookup".to_owned(),
                    source: std::io::Error::other(join.to_string()),
                });
            }
        };
        self.state().auths.insert(host.to_owned(), auth.clone());
        Ok(auth)
    }

    /// Asks the token endpoint for a token covering `scopes`; the token and how long to
    /// keep it.
    async fn fetch_token(
        &self,
        place: &Place,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
    ) -> Result<(String, Duration), RegistryError> {
        let http = self.http()?;
        let bad_realm = || RegistryError::BadHeader {
            place: place.clone(),
            what: format!("token realm {realm:?}"),
            header: "WWW-Authenticate",
        };
        let url = Url::parse(realm).map_err(|_| bad_realm())?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad_realm());
        }
        let auth = self.credentials_for(&place.registry).await?;
        let what = format!("token request to {realm}");
        let build = || -> RequestBuilder {
            match &auth {
                Some(Auth::IdentityToken(refresh)) => {
                    let mut form = url.clone();
                    form.set_query(None);
                    {
                        let mut pairs = form.query_pairs_mut();
                        pairs
                            .append_pair("grant_type", "refresh_token")
                            .append_pair("refresh_token", refresh)
                            .append_pair("client_id", "kiln");
                        if let Some(s) = service {
                            pairs.append_pair("service", s);
                        }
                        if !scopes.is_empty() {
                            pairs.append_pair("scope", &scopes.join(" "));
                        }
                    }
                    let body = form.query().unwrap_or_default().to_owned();
                    http.post(url.clone())
                        .header("Content-Type", "application/x-www-form-urlencoded")
                        .body(body)
                }
                other => {
                    let mut get = url.clone();
                    {
                        let mut pairs = get.query_pairs_mut();
                        if let Some(s) = service {
                            pairs.append_pair("service", s);
                        }
                        for scope in scopes {
                            pairs.append_pair("scope", scope);
                        }
                    }
                    let request = http.get(get);
                    match other {
                        Some(Auth::Basic { username, password }) => {
                            request.basic_auth(username, Some(password))
                        }
                        _ => request,
                    }
                }
            }
        };
        let (place_ref, what_ref, build_ref) = (place, &what, &build);
        let response = self
            .retrying(|attempt| async move {
                let (place, what, build) = (place_ref, what_ref, build_ref);
                let response = build()
                    .send()
                    .await
                    .map_err(|source| RegistryError::Transport {
                        place: place.clone(),
                        what: what.clone(),
                        attempts: attempt,
                        source,
                    })?;
                let response = check_status(place, what, response).await?;
                if response.status().is_success() {
                    return Ok(response);
                }
                Err(RegistryError::Token {
                    place: place.clone(),
                    realm: realm.to_owned(),
                    status: response.status().as_u16(),
                    detail: error_message(response).await,
                })
            })
            .await?;
        let body = read_limited(place, &what, response, SMALL_BODY_LIMIT).await?;
        #[derive(serde::Deserialize)]
        struct Answer {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let answer: Answer =
            serde_json::from_slice(&body).map_err(|source| RegistryError::BadJson {
                place: place.clone(),
                what: what.clone(),
                source,
            })?;
        let token = answer
            .token
            .filter(|t| !t.is_empty())
            .or(answer.access_token.filter(|t| !t.is_empty()))
            .ok_or_else(|| RegistryError::Token {
                place: place.clone(),
                realm: realm.to_owned(),
                status: 200,
                detail: RegistryMessage {
                    code: None,
                    message: Some("the answer has no token".to_owned()),
                },
            })?;
        // Tokens live at least 60 seconds by the spec; renew a little before expiry.
        let lifetime = Duration::from_secs(answer.expires_in.unwrap_or(60).clamp(60, 86_400) - 10);
        Ok((token, lifetime))
    }

    /// Verifies that the configured credentials are accepted by `registry_host`
    /// (`kiln login`): `GET /v2/` with them, after a token exchange when the registry
    /// uses tokens. A registry that needs no credentials accepts any.
    pub async fn check_auth(&self, registry_host: &str) -> Result<(), RegistryError> {
        let http = self.http()?;
        self.forget_auth(registry_host);
        self.state().auths.remove(registry_host);
        let place = Place {
            registry: registry_host.to_owned(),
            repository: None,
        };
        let unauthorized = |detail: &str| RegistryError::Unauthorized {
            place: place.clone(),
            status: 401,
            detail: RegistryMessage {
                code: None,
                message: Some(detail.to_owned()),
            },
        };
        match self.challenge(registry_host).await? {
            Challenge::None => return Ok(()),
            Challenge::Basic => {
                if !matches!(
                    self.credentials_for(registry_host).await?,
                    Some(Auth::Basic { .. })
                ) {
                    return Err(unauthorized("no user name and password for this registry"));
                }
            }
            Challenge::Bearer { .. } => {
                if self.credentials_for(registry_host).await?.is_none() {
                    return Err(unauthorized("no credentials for this registry"));
                }
            }
        }
        let url = self.url(registry_host, "");
        let build = || http.get(&url);
        self.request(&place, &[], "GET /v2/", &build).await?;
        Ok(())
    }

    /// Records that `repo` holds `digest`, so later pushes to other repositories of the
    /// same registry can mount it from there ([`push_image`](super::push_image) asks
    /// [`RegistryClient::blob_locations`]). Pulls, pushes and existence checks record
    /// what they see; callers may add what they know from earlier runs.
    pub fn remember_blob(&self, repo: &ImageRef, digest: &Digest) {
        self.state()
            .holders
            .entry((repo.domain().to_owned(), digest.clone()))
            .or_default()
            .insert(repo.path().to_owned());
    }

    /// Other repositories of `repo`'s registry known to hold `digest`.
    pub fn blob_locations(&self, repo: &ImageRef, digest: &Digest) -> Vec<ImageRef> {
        let state = self.state();
        let Some(paths) = state
            .holders
            .get(&(repo.domain().to_owned(), digest.clone()))
        else {
            return Vec::new();
        };
        paths
            .iter()
            .filter(|p| p.as_str() != repo.path())
            .filter_map(|p| format!("{}/{p}", repo.domain()).parse().ok())
            .collect()
    }
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient")
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

/// The place of a request about `repo`.
pub(super) fn place_of(repo: &ImageRef) -> Place {
    Place {
        registry: repo.domain().to_owned(),
        repository: Some(repo.path().to_owned()),
    }
}

/// The token scope to pull from `repo`.
pub(super) fn pull_scope(repo: &ImageRef) -> String {
    format!("repository:{}:pull", repo.path())
}

/// The token scope to push to `repo`.
pub(super) fn push_scope(repo: &ImageRef) -> String {
    format!("repository:{}:pull,push", repo.path())
}

/// Turns 401/403 into [`RegistryError::Unauthorized`] and 429/5xx into
/// [`RegistryError::Status`]; passes every other response through.
async fn check_status(
    place: &Place,
    what: &str,
    response: Response,
) -> Result<Response, RegistryError> {
    let status = response.status().as_u16();
    match status {
        401 | 403 => Err(RegistryError::Unauthorized {
            place: place.clone(),
            status,
            detail: error_message(response).await,
        }),
        429 | 500.. => Err(RegistryError::Status {
            place: place.clone(),
            what: what.to_owned(),
            status,
            detail: error_message(response).await,
        }),
        _ => Ok(response),
    }
}

/// The error a response with an unexpected status stands for.
pub(super) async fn unexpected(place: &Place, what: &str, response: Response) -> RegistryError {
    let status = response.status().as_u16();
    let detail = error_message(response).await;
    if status == 404 {
        return RegistryError::NotFound {
            place: place.clone(),
            what: what.to_owned(),
            detail,
        };
    }
    RegistryError::Status {
        place: place.clone(),
        what: what.to_owned(),
        status,
        detail,
    }
}

/// The first error of a registry's JSON error body; empty when there is none or it is
/// unreadable.
pub(super) async fn error_message(mut response: Response) -> RegistryMessage {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() as u64 > SMALL_BODY_LIMIT {
            return RegistryMessage::default();
        }
    }
    #[derive(serde::Deserialize)]
    struct Body {
        #[serde(default)]
        errors: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        code: Option<String>,
        message: Option<String>,
    }
    match serde_json::from_slice::<Body>(&body) {
        Ok(b) => b
            .errors
            .into_iter()
            .next()
            .map(|e| RegistryMessage {
                code: e.code,
                message: e.message,
            })
            .unwrap_or_default(),
        Err(_) => RegistryMessage::default(),
    }
}

/// Reads a whole body of at most `limit` bytes.
pub(super) async fn read_limited(
    place: &Place,
    what: &str,
    mut response: Response,
    limit: u64,
) -> Result<Vec<u8>, RegistryError> {
    let too_large = || RegistryError::TooLarge {
        place: place.clone(),
        what: what.to_owned(),
        limit,
    };
    if response.content_length().is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if (body.len() + chunk.len()) as u64 > limit {
                    return Err(too_large());
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(source) => {
                return Err(RegistryError::Transport {
                    place: place.clone(),
                    what: what.to_owned(),
                    attempts: 1,
                    source,
                });
            }
        }
    }
}

fn basic_header(username: &str, password: &str) -> String {
    format!("Basic {}", BASE64.encode(format!("{username}:{password}")))
}

/// `host` without its `:port`, and without brackets for IPv6.
fn host_without_port(host: &str) -> &str {
    if let Some(v6) = host.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6);
    }
    host.split(':').next().unwrap_or(host)
}

/// Reads a `WWW-Authenticate` challenge: `Bearer realm="…",service="…"` or `Basic …`.
fn parse_challenge(headers: &HeaderMap) -> Option<Challenge> {
    let mut basic = false;
    for value in headers.get_all(WWW_AUTHENTICATE) {
        let Ok(text) = value.to_str() else { continue };
        let text = text.trim();
        let (scheme, params) = text.split_once(' ').unwrap_or((text, ""));
        if scheme.eq_ignore_ascii_case("bearer") {
            let params = parse_params(params);
            let realm = params.get("realm")?.clone();
            return Some(Challenge::Bearer {
                realm,
                service: params.get("service").cloned(),
            });
        }
        if scheme.eq_ignore_ascii_case("basic") {
            basic = true;
        }
    }
    basic.then_some(Challenge::Basic)
}

/// `key="value", key=value` pairs of a challenge, keys lowercased.
fn parse_params(text: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, tail) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            value.push(escaped);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &quoted[end.min(quoted.len())..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_owned(), &after[end..])
        };
        out.insert(key, value);
        rest = tail.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn challenge(values: &[&str]) -> Option<Challenge> {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(WWW_AUTHENTICATE, HeaderValue::from_str(v).unwrap());
        }
        parse_challenge(&h)
    }

    #[test]
    fn reads_challenges() {
        assert_eq!(
            challenge(&[
                r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull""#
            ]),
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".to_owned(),
                service: Some("registry.example".to_owned())
            })
        );
        assert_eq!(
            challenge(&[r#"Bearer realm=https://a/t, service="s\"q""#]),
            Some(Challenge::Bearer {
                realm: "https://a/t".to_owned(),
                service: Some("s\"q".to_owned())
            })
        );
        assert_eq!(
            challenge(&[r#"Basic realm="Registry Realm""#]),
            Some(Challenge::Basic)
        );
        assert_eq!(challenge(&["Bearer service=\"x\""]), None);
        assert_eq!(challenge(&["Negotiate"]), None);
        assert!(challenge(&[r#"Bearer realm="unterminated"#]).is_some());
    }

    #[test]
    fn plain_http_only_for_loopback_and_listed_hosts() {
        let client = RegistryClient::new(ClientOptions {
            insecure_registries: vec!["reg.lan:5000".to_owned(), "other.lan".to_owned()],
            ..ClientOptions::default()
        })
        .unwrap();
        for host in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "127.3.2.1",
            "[::1]:5000",
            "reg.lan:5000",
            "other.lan:443",
        ] {
            assert!(client.is_plain_http(host), "{host}");
        }
        for host in ["reg.lan:5001", "example.com", "10.0.0.1:5000", "docker.io"] {
            assert!(!client.is_plain_http(host), "{host}");
        }
        assert_eq!(
            client.url("docker.io", "library/busybox/manifests/latest"),
            "https://registry-1.docker.io/v2/library/busybox/manifests/latest"
        );
        assert_eq!(
            client.url("127.0.0.1:5000", ""),
            "http://127.0.0.1:5000/v2/"
        );
    }
}
