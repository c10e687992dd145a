//! Where the client verbs find their server and token: flags > environment
//! (`TASKTAPE_URL`, `TASKTAPE_TOKEN`) > `client.toml` in the user's config
//! directory > `http://127.0.0.1:8765`; and how a failed call is told to the
//! user in one line, with its exit code.

use std::fmt;
use std::path::{Path, PathBuf};

use clap::Args;
use serde::Deserialize;
use tasktape_client::{Client, ClientError};

use crate::exit::{Exit, Failure};

/// The server to talk to, on every client verb.
#[derive(Args, Debug, Clone, Default)]
pub struct RemoteArgs {
    /// Server URL [env: TASKTAPE_URL] [default: http://127.0.0.1:8765]
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// Bearer token [env: TASKTAPE_TOKEN]
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
    /// Also trust this PEM certificate for https:// (a private CA or a
    /// self-signed server) [env: TASKTAPE_CA_CERT]
    #[arg(long, value_name = "FILE")]
    ca_cert: Option<PathBuf>,
}

/// Where a setting came from, for error messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Flag,
    Env(&'static str),
    File(PathBuf),
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag => f.write_str("the command line"),
            Source::Env(name) => write!(f, "${name}"),
            Source::File(path) => write!(f, "{}", path.display()),
            Source::Default => f.write_str("the default"),
        }
    }
}

/// The resolved server settings and a client for them.
pub struct Remote {
    pub client: Client,
    pub url: String,
    pub url_source: Source,
    pub token_source: Option<Source>,
    pub config_path: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientFile {
    url: Option<String>,
    token: Option<String>,
}

/// `$XDG_CONFIG_HOME/tasktape/client.toml`, else `~/.config/tasktape/client.toml`.
fn config_path() -> Option<PathBuf> {
    let from_env = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty());
    let base = from_env("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| from_env("HOME").map(|home| Path::new(&home).join(".config")))?;
    Some(base.join("tasktape").join("client.toml"))
}

fn read_file(path: &Path) -> Result<ClientFile, Failure> {
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text).map_err(|error| {
            Failure::new(
                Exit::Usage,
                format!("cannot read {}: {}", path.display(), error.message()),
            )
        }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(ClientFile::default()),
        Err(error) => Err(Failure::new(
            Exit::Usage,
            format!("cannot read {}: {error}", path.display()),
        )),
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}

impl RemoteArgs {
    /// Whether any was given.
    pub(crate) fn given(&self) -> bool {
        self.url.is_some() || self.token.is_some() || self.ca_cert.is_some()
    }

    /// Takes `outer`'s values for the ones not given here.
    pub(crate) fn fill_from(&mut self, outer: &RemoteArgs) {
        self.url = self.url.take().or_else(|| outer.url.clone());
        self.token = self.token.take().or_else(|| outer.token.clone());
        self.ca_cert = self.ca_cert.take().or_else(|| outer.ca_cert.clone());
    }

    /// Resolves the settings and builds the client.
    pub fn connect(&self) -> Result<Remote, Failure> {
        let config_path = config_path();
        let file = match &config_path {
            Some(path) => read_file(path)?,
            None => ClientFile::default(),
        };
        let file_source = || Source::File(config_path.clone().unwrap_or_default());
        let (url, url_source) = if let Some(url) = self.url.clone() {
            (url, Source::Flag)
        } else if let Some(url) = env("TASKTAPE_URL") {
            (url, Source::Env("TASKTAPE_URL"))
        } else if let Some(url) = file.url.clone() {
            (url, file_source())
        } else {
            ("http://127.0.0.1:8765".to_owned(), Source::Default)
        };
        let token = if let Some(token) = self.token.clone() {
            Some((token, Source::Flag))
        } else if let Some(token) = env("TASKTAPE_TOKEN") {
            Some((token, Source::Env("TASKTAPE_TOKEN")))
        } else {
            file.token
                .clone()
                .filter(|token| !token.is_empty())
                .map(|token| (token, file_source()))
        };
        let ca_path = self
            .ca_cert
            .clone()
            .or_else(|| env("TASKTAPE_CA_CERT").map(PathBuf::from));
        let ca_pem = match &ca_path {
            Some(path) => Some(std::fs::read(path).map_err(|error| {
                Failure::new(
                    Exit::Usage,
                    format!("cannot read the CA certificate {}: {error}", path.display()),
                )
            })?),
            None => None,
        };
        let client = Client::with_ca_cert(
            &url,
            token.as_ref().map(|(token, _)| token.as_str()),
            ca_pem.as_deref(),
        )
        .map_err(|error| Failure::new(Exit::Usage, format!("{error} (from {url_source})")))?;
        Ok(Remote {
            client,
            url: url.trim_end_matches('/').to_owned(),
            url_source,
            token_source: token.map(|(_, source)| source),
            config_path,
        })
    }
}

impl Remote {
    /// `--url …` to repeat in a suggested command, when the URL did not come
    /// from the default, the environment or the config file.
    pub fn url_flag(&self) -> String {
        match self.url_source {
            Source::Flag => format!(" --url {}", self.url),
            _ => String::new(),
        }
    }

    /// Awaits a client call; a failure becomes one line and an exit code.
    pub async fn call<T>(
        &self,
        call: impl Future<Output = Result<T, ClientError>>,
    ) -> Result<T, Failure> {
        call.await.map_err(|error| self.failure(error))
    }

    /// One line for a failed call, and its exit code.
    pub fn failure(&self, error: ClientError) -> Failure {
        match &error {
            ClientError::Connect { reason, .. } => Failure::new(
                Exit::Failed,
                format!(
                    "cannot connect to the tasktape server at {} ({reason}); is `tasktape serve` running? (the URL comes from {})",
                    self.url, self.url_source
                ),
            ),
            ClientError::Api(api) if api.status == 401 => {
                let message = match &self.token_source {
                    None => format!(
                        "the server at {} needs a token: pass --token, set TASKTAPE_TOKEN, or put `token = \"…\"` in {}",
                        self.url,
                        self.config_display()
                    ),
                    Some(source) => {
                        format!("the server at {} refused the token from {source}", self.url)
                    }
                };
                Failure::new(Exit::Failed, message)
            }
            ClientError::Api(api) if api.code == "op_not_found" => {
                let known = api
                    .detail
                    .as_ref()
                    .and_then(|detail| detail.get("known"))
                    .and_then(|known| known.as_array())
                    .map(|names| {
                        names
                            .iter()
                            .filter_map(|name| name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    });
                let message = match known {
                    Some(known) if !api.message.contains("known ops") => {
                        format!("{}; known ops: {known}", api.message)
                    }
                    _ => api.message.clone(),
                };
                Failure::new(Exit::Usage, message)
            }
            ClientError::Api(api) if api.status == 422 || api.status == 400 => {
                let field = api
                    .detail
                    .as_ref()
                    .and_then(|detail| detail.get("field"))
                    .and_then(|field| field.as_str())
                    .filter(|field| !api.message.contains(field))
                    .map(|field| format!(" (field `{field}`)"))
                    .unwrap_or_default();
                Failure::new(Exit::Usage, format!("{}{field}", api.message))
            }
            ClientError::Api(api) if api.status == 404 => {
                Failure::new(Exit::Failed, format!("{} on {}", api.message, self.url))
            }
            ClientError::Api(api) => Failure::new(Exit::Failed, api.message.clone()),
            _ => Failure::new(Exit::Failed, error.to_string()),
        }
    }

    fn config_display(&self) -> String {
        self.config_path
            .as_ref()
            .map(|path| path.display().to_string())
            .unwrap_or_else(|| "~/.config/tasktape/client.toml".to_owned())
    }
}
