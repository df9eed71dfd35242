//! The HTTPS API (axum over rustls): device-facing attestation endpoints and the operator API
//! (bearer token). Documented in `docs/openapi/sphere-cloud.yaml`.

use crate::service::{Cloud, ErrorQuery, ServiceError};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use sphere_attestation::api::{
    ApiError, CERTIFICATE_PATH, CertificateRequest, EVIDENCE_PATH, EvidenceSubmission, NONCE_PATH, NonceRequest,
};
use std::sync::Arc;

impl IntoResponse for ServiceError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            eprintln!("sphere-cloud: {self}");
        }
        (status, Json(ApiError { code: self.code.to_owned(), error: self.message })).into_response()
    }
}

type ApiResult<T> = Result<Json<T>, ServiceError>;

#[derive(Clone)]
struct AppState {
    cloud: Arc<Cloud>,
    token: Arc<String>,
}

/// Build the router. `operator_token` guards every `/v1/` route that is not device-facing.
pub fn router(cloud: Arc<Cloud>, operator_token: String) -> Router {
    let state = AppState { cloud, token: Arc::new(operator_token) };
    let device = Router::new()
        .route(NONCE_PATH, post(nonce))
        .route(EVIDENCE_PATH, post(evidence))
        .route(CERTIFICATE_PATH, post(certificate))
        .route("/v1/ca.pem", get(ca_pem))
        .route("/v1/crl.pem", get(crl_pem))
        .route("/v1/devices/{id}/release", get(device_release))
        .route("/v1/health", get(health));
    let operator = Router::new()
        .route("/v1/devices", get(list_devices).post(register_device))
        .route("/v1/devices/{id}", get(show_device))
        .route("/v1/devices/{id}/revoke", post(revoke_device))
        .route("/v1/devices/{id}/group", put(assign_group))
        .route("/v1/devices/{id}/attestations", get(attestations))
        .route("/v1/devices/{id}/certificates", get(certificates))
        .route("/v1/certificates/{serial}/revoke", post(revoke_certificate))
        .route("/v1/groups", get(list_groups).post(create_group))
        .route("/v1/groups/{name}", get(show_group))
        .route("/v1/groups/{name}/release", put(set_release))
        .route("/v1/errors", get(errors))
        .route("/v1/reference-values", get(reference_values))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_operator));
    device.merge(operator).layer(axum::extract::DefaultBodyLimit::max(1024 * 1024)).with_state(state)
}

/// Constant-time comparison, so the token cannot be guessed byte by byte from timings.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn require_operator(State(state): State<AppState>, headers: HeaderMap, request: Request, next: Next) -> Response {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !same(presented.trim().as_bytes(), state.token.as_bytes()) {
        return ServiceError::new(401, "unauthorized", "operator API: send Authorization: Bearer <operator token>")
            .into_response();
    }
    next.run(request).await
}

async fn health(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok", "storage": state.cloud.store.engine()}))
}

async fn nonce(
    State(state): State<AppState>,
    Json(request): Json<NonceRequest>,
) -> ApiResult<sphere_attestation::api::NonceResponse> {
    Ok(Json(state.cloud.new_nonce(&request.device_id).await?))
}

async fn evidence(
    State(state): State<AppState>,
    Json(submission): Json<EvidenceSubmission>,
) -> ApiResult<sphere_attestation::api::AttestationResult> {
    Ok(Json(state.cloud.submit_evidence(&submission).await?))
}

async fn certificate(
    State(state): State<AppState>,
    Json(request): Json<CertificateRequest>,
) -> ApiResult<sphere_attestation::api::CertificateResponse> {
    Ok(Json(state.cloud.certificate_from_latest(&request).await?))
}

async fn ca_pem(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/x-pem-file")], state.cloud.ca.certificate_pem.clone())
}

async fn crl_pem(State(state): State<AppState>) -> Result<impl IntoResponse, ServiceError> {
    Ok(([(header::CONTENT_TYPE, "application/x-pem-file")], state.cloud.crl()?))
}

async fn device_release(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<serde_json::Value> {
    let release = state.cloud.release_for_device(&id).await?;
    Ok(Json(serde_json::json!({"device_id": id, "release": release})))
}

#[derive(Deserialize)]
struct GroupFilter {
    group: Option<String>,
}

async fn list_devices(
    State(state): State<AppState>,
    Query(filter): Query<GroupFilter>,
) -> ApiResult<Vec<crate::service::DeviceInfo>> {
    Ok(Json(state.cloud.list_devices(filter.group.as_deref()).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterDevice {
    public_key_pem: String,
    group: Option<String>,
    #[serde(default)]
    description: String,
}

async fn register_device(
    State(state): State<AppState>,
    Json(body): Json<RegisterDevice>,
) -> Result<(StatusCode, Json<crate::service::DeviceInfo>), ServiceError> {
    let device = state.cloud.register_device(&body.public_key_pem, body.group.as_deref(), &body.description).await?;
    Ok((StatusCode::CREATED, Json(device)))
}

async fn show_device(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<crate::service::DeviceInfo> {
    Ok(Json(state.cloud.device(&id).await?))
}

async fn revoke_device(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<crate::service::DeviceInfo> {
    Ok(Json(state.cloud.revoke_device(&id).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AssignGroup {
    group: Option<String>,
}

async fn assign_group(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(body): Json<AssignGroup>,
) -> ApiResult<crate::service::DeviceInfo> {
    Ok(Json(state.cloud.assign_group(&id, body.group.as_deref()).await?))
}

#[derive(Deserialize)]
struct Limit {
    limit: Option<i64>,
}

async fn attestations(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(limit): Query<Limit>,
) -> ApiResult<Vec<crate::service::AttestationRecord>> {
    Ok(Json(state.cloud.attestations(&id, limit.limit.unwrap_or(20)).await?))
}

async fn certificates(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Vec<crate::service::CertificateRecord>> {
    Ok(Json(state.cloud.certificates(&id).await?))
}

async fn revoke_certificate(
    State(state): State<AppState>,
    Path(serial): Path<String>,
) -> ApiResult<crate::service::CertificateRecord> {
    Ok(Json(state.cloud.revoke_certificate(&serial).await?))
}

async fn list_groups(State(state): State<AppState>) -> ApiResult<Vec<crate::service::GroupInfo>> {
    Ok(Json(state.cloud.list_groups().await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateGroup {
    name: String,
    #[serde(default)]
    description: String,
    release: Option<String>,
}

async fn create_group(
    State(state): State<AppState>,
    Json(body): Json<CreateGroup>,
) -> Result<(StatusCode, Json<crate::service::GroupInfo>), ServiceError> {
    let group = state.cloud.create_group(&body.name, &body.description, body.release.as_deref()).await?;
    Ok((StatusCode::CREATED, Json(group)))
}

async fn show_group(State(state): State<AppState>, Path(name): Path<String>) -> ApiResult<crate::service::GroupInfo> {
    Ok(Json(state.cloud.group(&name).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetRelease {
    release: Option<String>,
}

async fn set_release(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Json(body): Json<SetRelease>,
) -> ApiResult<crate::service::GroupInfo> {
    Ok(Json(state.cloud.set_group_release(&name, body.release.as_deref()).await?))
}

async fn errors(
    State(state): State<AppState>,
    Query(query): Query<ErrorQuery>,
) -> ApiResult<Vec<crate::service::StoredErrorReport>> {
    Ok(Json(state.cloud.query_errors(&query).await?))
}

async fn reference_values(State(state): State<AppState>) -> Json<serde_json::Value> {
    let refs = state.cloud.reference_values();
    Json(serde_json::json!({
        "source": refs.source,
        "os_versions": refs.os_versions,
        "measurements": refs.measurements.len(),
        "apps_with_policies": refs.sandbox.len(),
    }))
}

/// Serve `router` over TLS on `listener` until the process ends. Each connection is handled in
/// its own task; a failed handshake only ends that connection.
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
) -> std::io::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and similar: back off instead of spinning.
                eprintln!("sphere-cloud: accept: {error}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let Ok(Ok(tls_stream)) =
                tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(stream)).await
            else {
                return;
            };
            let service = hyper_util::service::TowerToHyperService::new(router);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tls_stream), service)
                .await;
        });
    }
}
