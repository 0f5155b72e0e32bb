//! Fetching the webhook secret (and an MQTT URL holding a password) at start-up.
//!
//! Sources: the environment, AWS SSM Parameter Store (SecureString, decrypted) or Secrets
//! Manager, each read once per cold start. Promise: errors name the setting and the parameter,
//! never the value.

use crate::config::SecretSource;
use anyhow::{bail, Context as _};
use qlik_events::Secret;

/// The previous secret during a rotation (`QLIK_WEBHOOK_SECRET_PREVIOUS[_SSM_PARAMETER]`).
pub async fn resolve_previous(
    source: &SecretSource,
    aws: Option<&aws_config::SdkConfig>,
) -> anyhow::Result<Secret> {
    let var = "QLIK_WEBHOOK_SECRET_PREVIOUS_SSM_PARAMETER";
    let secret = match source {
        SecretSource::Ssm(name) => Secret::new(ssm_parameter(aws, var, name).await?),
        other => resolve_as(other, aws, var).await?,
    };
    Ok(secret)
}

pub async fn resolve(
    source: &SecretSource,
    aws: Option<&aws_config::SdkConfig>,
) -> anyhow::Result<Secret> {
    resolve_as(source, aws, "QLIK_WEBHOOK_SECRET_SSM_PARAMETER").await
}

/// `ssm_var`: the setting that names an SSM parameter, for errors.
async fn resolve_as(
    source: &SecretSource,
    aws: Option<&aws_config::SdkConfig>,
    ssm_var: &str,
) -> anyhow::Result<Secret> {
    let secret = match source {
        SecretSource::Env(secret) => secret.clone(),
        SecretSource::Ssm(name) => Secret::new(ssm_parameter(aws, ssm_var, name).await?),
        SecretSource::SecretsManager(id) => {
            let sdk = aws.context("QLIK_WEBHOOK_SECRET_ID: no AWS configuration")?;
            let out = aws_sdk_secretsmanager::Client::new(sdk)
                .get_secret_value()
                .secret_id(id)
                .send()
                .await
                .map_err(|e| {
                    anyhow::anyhow!("{}", aws_sdk_secretsmanager::error::DisplayErrorContext(e))
                })
                .with_context(|| format!("QLIK_WEBHOOK_SECRET_ID: cannot read secret {id}"))?;
            match out.secret_string() {
                Some(value) => Secret::new(value.trim()),
                None => bail!("QLIK_WEBHOOK_SECRET_ID: secret {id} has no SecretString"),
            }
        }
    };
    if secret.is_empty() {
        bail!("the webhook secret is empty");
    }
    if !(32..=64).contains(&secret.len()) {
        tracing::warn!(
            length = secret.len(),
            "the webhook secret is not 32–64 characters long, unlike the secrets Qlik Cloud generates"
        );
    }
    Ok(secret)
}

/// Reads a (SecureString) parameter, decrypted. `var` is the setting that named it.
pub async fn ssm_parameter(
    aws: Option<&aws_config::SdkConfig>,
    var: &str,
    name: &str,
) -> anyhow::Result<String> {
    let sdk = aws.with_context(|| format!("{var}: no AWS configuration"))?;
    let out = aws_sdk_ssm::Client::new(sdk)
        .get_parameter()
        .name(name)
        .with_decryption(true)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("{}", aws_sdk_ssm::error::DisplayErrorContext(e)))
        .with_context(|| format!("{var}: cannot read SSM parameter {name}"))?;
    match out.parameter().and_then(|p| p.value()) {
        Some(value) if !value.trim().is_empty() => Ok(value.trim().to_owned()),
        _ => bail!("{var}: SSM parameter {name} is empty"),
    }
}
