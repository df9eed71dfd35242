//! `sphere app install|remove|list|start|stop|status|logs|violations`: talk to a device's app
//! manager over D-Bus (see `sphere-appd-api`).

use crate::cli::{AppCommand, DeviceArgs};
use crate::output::{CommandError, Output};
use serde_json::json;
use sphere_appd_api::{AppManagerProxy, AppStatus};
use std::path::Path;

pub fn run(command: AppCommand, output: &Output) -> Result<(), CommandError> {
    client_runtime()?.block_on(dispatch(command, output))
}

pub fn development_mode(enabled: bool, device: &DeviceArgs, output: &Output) -> Result<(), CommandError> {
    client_runtime()?.block_on(async {
        let proxy = connect(device).await?;
        proxy.set_development_mode(enabled).await.map_err(refused)?;
        let now = proxy.development_mode().await.map_err(refused)?;
        output.print(&json!({ "ok": true, "development_mode": now }), || {
            format!("development mode {}", if now { "on: development-signed packages install" } else { "off" })
        });
        Ok(())
    })
}

fn client_runtime() -> Result<tokio::runtime::Runtime, CommandError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CommandError::Usage(format!("cannot start the client runtime: {e}")))
}

async fn dispatch(command: AppCommand, output: &Output) -> Result<(), CommandError> {
    match command {
        AppCommand::Install { file, device } => {
            let proxy = connect(&device).await?;
            let id = install(&proxy, &file).await?;
            let status = proxy.status(&id).await.map_err(refused)?;
            output.print(&json!({ "ok": true, "app": &status }), || {
                format!("installed {} {}\n{}", status.name, id, describe(&status))
            });
        }
        AppCommand::Remove { component_id, device } => {
            connect(&device).await?.remove(&component_id).await.map_err(refused)?;
            output.print(&json!({ "ok": true, "removed": component_id }), || format!("removed {component_id}"));
        }
        AppCommand::List { device } => {
            let apps = connect(&device).await?.list().await.map_err(refused)?;
            output.print(&json!({ "ok": true, "apps": &apps }), || list_table(&apps));
        }
        AppCommand::Start { component_id, device } => {
            let proxy = connect(&device).await?;
            proxy.start(&component_id).await.map_err(refused)?;
            print_status(&proxy, &component_id, output).await?;
        }
        AppCommand::Stop { component_id, device } => {
            let proxy = connect(&device).await?;
            proxy.stop(&component_id).await.map_err(refused)?;
            print_status(&proxy, &component_id, output).await?;
        }
        AppCommand::Restart { component_id, device } => {
            let proxy = connect(&device).await?;
            proxy.restart(&component_id).await.map_err(refused)?;
            print_status(&proxy, &component_id, output).await?;
        }
        AppCommand::Status { component_id, device } => {
            print_status(&connect(&device).await?, &component_id, output).await?;
        }
        AppCommand::Logs { component_id, lines, device } => {
            let logs = connect(&device).await?.logs(&component_id, lines).await.map_err(refused)?;
            output.print(&json!({ "ok": true, "lines": &logs }), || logs.join("\n"));
        }
        AppCommand::Violations { component_id, device } => {
            let violations = connect(&device).await?.violations(&component_id).await.map_err(refused)?;
            output.print(&json!({ "ok": true, "violations": &violations }), || {
                if violations.is_empty() {
                    return "no violations recorded".to_owned();
                }
                let rows: Vec<String> =
                    violations.iter().map(|v| format!("{:<16} {:>6}  {}", v.kind, v.count, v.detail)).collect();
                rows.join("\n")
            });
        }
        AppCommand::Package { .. } | AppCommand::Verify { .. } | AppCommand::Show { .. } => {
            return Err(CommandError::Usage("not a device command".to_owned()));
        }
    }
    Ok(())
}

/// Send the package's bytes, so the device needs no access to this machine's files (a QEMU
/// guest over its development port); packages too large for one D-Bus message go by path.
async fn install(proxy: &AppManagerProxy<'_>, file: &Path) -> Result<String, CommandError> {
    let unreadable = |e: std::io::Error| CommandError::Usage(format!("cannot read {}: {e}", file.display()));
    let size = std::fs::metadata(file).map_err(unreadable)?.len();
    if size <= sphere_appd_api::MAX_PACKAGE_MESSAGE_BYTES as u64 {
        let bytes = std::fs::read(file).map_err(unreadable)?;
        return proxy.install_package(&bytes).await.map_err(refused);
    }
    let path = file.canonicalize().map_err(unreadable)?;
    proxy.install(&path.to_string_lossy()).await.map_err(refused)
}

async fn connect(device: &DeviceArgs) -> Result<AppManagerProxy<'static>, CommandError> {
    let connection = if device.system_bus {
        zbus::Connection::system().await.map_err(|e| unreachable_manager(&e.to_string(), None))?
    } else {
        let stream = tokio::net::UnixStream::connect(&device.socket)
            .await
            .map_err(|e| unreachable_manager(&e.to_string(), Some(&device.socket)))?;
        zbus::connection::Builder::unix_stream(stream)
            .p2p()
            .build()
            .await
            .map_err(|e| unreachable_manager(&e.to_string(), Some(&device.socket)))?
    };
    AppManagerProxy::new(&connection).await.map_err(|e| unreachable_manager(&e.to_string(), None))
}

fn unreachable_manager(error: &str, socket: Option<&Path>) -> CommandError {
    let place = socket.map_or_else(|| "the system bus".to_owned(), |s| s.display().to_string());
    CommandError::Usage(format!("cannot reach the app manager on {place}: {error} (is sphere-appd running?)"))
}

/// The app manager refused or failed: the request was understood, so this is exit 1.
fn refused(error: zbus::Error) -> CommandError {
    let message = match &error {
        zbus::Error::MethodError(_, Some(detail), _) => detail.clone(),
        other => other.to_string(),
    };
    CommandError::invalid(message)
}

/// Print an app's state after a command changed it (or to answer `status`).
async fn print_status(proxy: &AppManagerProxy<'_>, component_id: &str, output: &Output) -> Result<(), CommandError> {
    let status = proxy.status(component_id).await.map_err(refused)?;
    output.print(&json!({ "ok": true, "app": &status }), || describe(&status));
    Ok(())
}

fn describe(status: &AppStatus) -> String {
    let pid = if status.pid == 0 { "-".to_owned() } else { status.pid.to_string() };
    format!(
        "{} {}\n  state      {}\n  pid        {pid}\n  version    {}\n  restarts   {}\n  last exit  {}{}",
        status.name,
        status.component_id,
        status.state,
        status.version,
        status.restarts,
        if status.last_exit.is_empty() { "-" } else { &status.last_exit },
        if status.development { "\n  signed with a development key" } else { "" }
    )
}

fn list_table(apps: &[AppStatus]) -> String {
    if apps.is_empty() {
        return "no apps installed".to_owned();
    }
    let mut rows =
        vec![format!("{:<36}  {:<20} {:<9} {:>7} {:>8}", "COMPONENT ID", "NAME", "STATE", "PID", "RESTARTS")];
    for app in apps {
        rows.push(format!(
            "{:<36}  {:<20} {:<9} {:>7} {:>8}",
            app.component_id, app.name, app.state, app.pid, app.restarts
        ));
    }
    rows.join("\n")
}
