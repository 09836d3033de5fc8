//! Where the server is: the flags every `eval` command that talks to it takes. Its own
//! module so the commands (`crate::command`) and the bench (`crate::bench`), which the
//! command line dispatches to, both use it without depending on each other.

use clap::Args;

use crate::client::ApiClient;

#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Base URL of the orchestrator's API.
    #[arg(long, env = "ORCHESTRATOR_URL", default_value = "http://127.0.0.1:8000")]
    pub url: String,

    /// Sent as `Authorization: Bearer <key>` when set; prefer the environment variable, which
    /// stays out of the process list.
    #[arg(long, env = "ORCHESTRATOR_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
}

impl ServerArgs {
    pub fn client(&self) -> ApiClient {
        ApiClient::new(self.url.clone()).with_api_key(self.api_key.clone())
    }
}
