//! One attempt at a notification, by its channel: a webhook's POST (JSON, Slack's or Teams'
//! shape), a mail through the installation's SMTP connection, or a command. An error says what
//! went wrong without the secrets it used (no URL, no password).

use std::path::PathBuf;
use std::sync::Arc;

use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use updraft_core::notify::{COMMAND_TIMEOUT, Channel, Notice, SEND_TIMEOUT};
use updraft_core::render;
use updraft_core::secret::{Masker, references, substitute};
use updraft_core::template;
use updraft_metadata::{Notification, Store};
use updraft_process::{Files, HANDLER_KILL_GRACE, Spawn};

use crate::Settings;

/// The connection mail is sent through (Airflow's).
pub const SMTP_CONNECTION: &str = "smtp_default";

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(SEND_TIMEOUT)
        .user_agent(concat!("updraft/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("an HTTP client with rustls")
}

/// Makes one attempt at `notification`.
pub async fn send(
    store: &Store,
    settings: &Settings,
    client: &reqwest::Client,
    notification: &Notification,
) -> Result<(), String> {
    let mut channel: Channel = serde_json::from_value(notification.channel.clone())
        .map_err(|error| format!("a channel this build cannot read: {error}"))?;
    let notice: Notice = serde_json::from_value(notification.notice.clone())
        .map_err(|error| format!("a notice this build cannot read: {error}"))?;
    fill(store, settings, notification, &mut channel).await?;
    match channel {
        Channel::Webhook { url, headers } => {
            let mut request = client.post(url).json(&notice.webhook_body());
            for (name, value) in headers {
                request = request.header(name, value);
            }
            post(request).await
        }
        Channel::Slack { webhook } => post(client.post(webhook).json(&notice.slack_body())).await,
        Channel::Teams { webhook } => post(client.post(webhook).json(&notice.teams_body())).await,
        Channel::Email { to } => mail(store, settings, &to, &notice).await,
        Channel::Command(handler) => {
            let spawn = Spawn {
                command: handler.command,
                env: handler
                    .env
                    .into_iter()
                    .chain(notice.environment())
                    .collect(),
                inherit_env: Vec::new(),
                working_dir: PathBuf::from("."),
                timeout: Some(COMMAND_TIMEOUT),
                kill_grace: HANDLER_KILL_GRACE,
                files: Files::Scratch(Arc::default()),
            };
            let (ending, _) = updraft_process::run_handler(spawn, Masker::default()).await;
            match ending {
                updraft_process::Ending::Exited(0) => Ok(()),
                other => Err(updraft_process::describe(&other)),
            }
        }
    }
}

/// Renders the channel's templated addresses and headers in its run's context, then fills in
/// the secrets they read. The run and its DAG version are read only for a templated channel.
async fn fill(
    store: &Store,
    settings: &Settings,
    notification: &Notification,
    channel: &mut Channel,
) -> Result<(), String> {
    let mut texts = channel.texts_mut();
    if texts.iter().any(|text| template::is_templated(text)) {
        let run = store
            .get_dag_runs(&[notification.dag_run_id])
            .await
            .map_err(|error| error.to_string())?
            .pop()
            .ok_or("its run is gone")?;
        let dag = store
            .load_dag(&run.dag_id, &run.version_hash)
            .await
            .map_err(|error| error.to_string())?;
        let catalog = updraft_secrets::catalog(store, &settings.secrets)
            .await
            .map_err(|error| error.to_string())?;
        let context = run.template_context(&dag, Arc::new(catalog))?;
        for text in texts.iter_mut() {
            **text = render::render_text(text, &context)
                .map_err(|error| format!("{}: {}", error.field, error.message))?;
        }
    }
    for text in texts {
        let wanted = references(text)?;
        if wanted.is_empty() {
            continue;
        }
        let values = updraft_secrets::resolve(store, &settings.secrets, &wanted)
            .await
            .map_err(|error| error.to_string())?;
        *text = substitute(text, |reference| {
            values
                .get(reference)
                .cloned()
                .ok_or_else(|| "a reference was not resolved".to_owned())
        })?;
    }
    Ok(())
}

async fn post(request: reqwest::RequestBuilder) -> Result<(), String> {
    let response = request
        .send()
        .await
        .map_err(|error| error.without_url().to_string())?;
    let status = response.status();
    match status.is_success() {
        true => Ok(()),
        false => Err(format!("the receiver answered HTTP {status}")),
    }
}

/// Mails the notice to `to` through [`SMTP_CONNECTION`]: its host and port, its login and
/// password, and in its extra (Airflow's fields) `from_email`, `disable_ssl` (no TLS from the
/// start, which is the default, on port 465) and `disable_tls` (no STARTTLS either: plain
/// SMTP, on port 25 by default).
async fn mail(
    store: &Store,
    settings: &Settings,
    to: &[String],
    notice: &Notice,
) -> Result<(), String> {
    let smtp = updraft_secrets::connection(store, &settings.secrets, SMTP_CONNECTION)
        .await
        .map_err(|error| format!("mail needs the connection {SMTP_CONNECTION}: {error}"))?;
    let host = smtp
        .host
        .clone()
        .ok_or_else(|| format!("the connection {SMTP_CONNECTION} has no host"))?;
    let extra = smtp.extra.clone().unwrap_or_default();
    let flag = |name: &str| {
        extra
            .get(name)
            .and_then(|value| {
                value
                    .as_bool()
                    .or_else(|| value.as_str().map(|s| s == "true"))
            })
            .unwrap_or(false)
    };
    let smtp_error = |error: lettre::transport::smtp::Error| format!("SMTP: {error}");
    let (builder, port) = match (flag("disable_ssl"), flag("disable_tls")) {
        (false, _) => (
            AsyncSmtpTransport::<Tokio1Executor>::relay(&host).map_err(smtp_error)?,
            465,
        ),
        (true, false) => (
            AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&host).map_err(smtp_error)?,
            587,
        ),
        (true, true) => (
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&host),
            25,
        ),
    };
    let mut builder = builder
        .port(smtp.port.unwrap_or(port))
        .timeout(Some(SEND_TIMEOUT));
    if let (Some(login), Some(password)) = (&smtp.login, &smtp.password) {
        builder = builder.credentials(Credentials::new(login.clone(), password.clone()));
    }
    let from = extra
        .get("from_email")
        .and_then(|value| value.as_str())
        .map(str::to_owned)
        .or(smtp.login.clone().filter(|login| login.contains('@')))
        .unwrap_or_else(|| "updraft@localhost".to_owned());
    let mut message = Message::builder()
        .from(
            from.parse()
                .map_err(|error| format!("from address \"{from}\": {error}"))?,
        )
        .subject(notice.title())
        .header(ContentType::TEXT_PLAIN);
    for address in to {
        message = message.to(address
            .parse()
            .map_err(|error| format!("address \"{address}\": {error}"))?);
    }
    let message = message
        .body(notice.text())
        .map_err(|error| format!("the mail: {error}"))?;
    builder
        .build()
        .send(message)
        .await
        .map(|_| ())
        .map_err(smtp_error)
}
