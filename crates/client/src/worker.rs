//! The worker protocol's calls (`docs/WORKERS.md`), typed: what
//! `tasktape worker` and other Rust workers speak, and the workers'
//! listing.

use std::time::Duration;

use eventsource_stream::Eventsource as _;
use futures::{Stream, StreamExt as _};
use reqwest::Method;
use serde::Deserialize;
use serde_json::Value;
use tasktape_wire::TaskId;
use tasktape_wire::worker::{
    Assignment, ClaimAnswer, ClaimRequest, HeartbeatAnswer, HeartbeatRequest, ItemAnswer,
    Registered, Registration, ReportAnswer, ReportItem, ReportRequest, SessionBody, WorkerInfo,
    WorkersList,
};

use crate::{CALL_TIMEOUT, Client, ClientError, Result};

/// A push on a worker's signal stream.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum WorkerSignal {
    /// The stream is open.
    Ready,
    /// Stop this task (a cancel, its time limit, a shutdown).
    Cancel(TaskId),
    /// This task ended on the server's side: stop it, report nothing more.
    Stop(TaskId),
    /// Claim nothing more; finish what runs; exit.
    Drain,
}

#[derive(Deserialize)]
struct TaskRef {
    task_id: TaskId,
}

impl Client {
    /// Registers a worker (`POST /v1/worker/register`).
    pub async fn register_worker(&self, registration: &Registration) -> Result<Registered> {
        self.call_json(Method::POST, "/v1/worker/register", registration)
            .await
    }

    /// Claims tasks (`POST /v1/worker/claim`, a long-poll up to
    /// `request.wait_ms`).
    pub async fn claim(&self, request: &ClaimRequest) -> Result<Vec<Assignment>> {
        let path = "/v1/worker/claim";
        let http = self.request(Method::POST, path).json(request);
        let wait = Duration::from_millis(request.wait_ms);
        let answer: ClaimAnswer = self.send(http, path, CALL_TIMEOUT + wait).await?;
        Ok(answer.tasks)
    }

    /// Reports events and finishes (`POST /v1/worker/report`); one answer
    /// per item.
    pub async fn report(&self, session: &str, items: Vec<ReportItem>) -> Result<Vec<ItemAnswer>> {
        let request = ReportRequest {
            session: session.to_owned(),
            items,
        };
        let answer: ReportAnswer = self
            .call_json(Method::POST, "/v1/worker/report", &request)
            .await?;
        Ok(answer.items)
    }

    /// Renews the session (`POST /v1/worker/heartbeat`); the tasks named
    /// that the worker no longer holds.
    pub async fn heartbeat(&self, session: &str, tasks: Vec<TaskId>) -> Result<Vec<TaskId>> {
        let request = HeartbeatRequest {
            session: session.to_owned(),
            tasks,
        };
        let answer: HeartbeatAnswer = self
            .call_json(Method::POST, "/v1/worker/heartbeat", &request)
            .await?;
        Ok(answer.stop)
    }

    /// Says the worker drains (`POST /v1/worker/drain`).
    pub async fn worker_drain(&self, session: &str) -> Result<()> {
        self.session_call("/v1/worker/drain", session).await
    }

    /// Ends the session (`POST /v1/worker/deregister`).
    pub async fn deregister(&self, session: &str) -> Result<()> {
        self.session_call("/v1/worker/deregister", session).await
    }

    /// The session's signals (`GET /v1/worker/signals`), until the stream
    /// closes (reopen it to go on; cancels are pushed again).
    pub async fn worker_signals(
        &self,
        session: &str,
    ) -> Result<impl Stream<Item = Result<WorkerSignal>> + Send + use<>> {
        let path = "/v1/worker/signals";
        let request = self
            .request(Method::GET, path)
            .query(&[("session", session)])
            .header(reqwest::header::ACCEPT, "text/event-stream");
        let response = self.exchange(request, path, None).await?;
        let url = format!("{}{path}", self.base_url());
        Ok(response
            .bytes_stream()
            .eventsource()
            .filter_map(move |item| {
                let url = url.clone();
                async move {
                    let message = match item {
                        Ok(message) => message,
                        Err(error) => {
                            return Some(Err(ClientError::Protocol {
                                url,
                                reason: error.to_string(),
                            }));
                        }
                    };
                    let task = || serde_json::from_str::<TaskRef>(&message.data).ok();
                    match message.event.as_str() {
                        "ready" => Some(Ok(WorkerSignal::Ready)),
                        "drain" => Some(Ok(WorkerSignal::Drain)),
                        "cancel" => task().map(|t| Ok(WorkerSignal::Cancel(t.task_id))),
                        "stop" => task().map(|t| Ok(WorkerSignal::Stop(t.task_id))),
                        _ => None,
                    }
                }
            }))
    }

    /// Remote workers seen in the last day (`GET /v1/workers`).
    pub async fn workers(&self) -> Result<Vec<WorkerInfo>> {
        let list: WorkersList = self.call(Method::GET, "/v1/workers", None).await?;
        Ok(list.workers)
    }

    /// Asks a live worker to drain (`POST /v1/workers/{id}/drain`).
    pub async fn drain_worker(&self, worker_id: &str) -> Result<()> {
        let path = format!("/v1/workers/{worker_id}/drain");
        let request = self.request(Method::POST, &path);
        self.exchange(request, &path, Some(CALL_TIMEOUT)).await?;
        Ok(())
    }

    async fn session_call(&self, path: &str, session: &str) -> Result<()> {
        let body = SessionBody {
            session: session.to_owned(),
        };
        let request = self.request(Method::POST, path).json(&body);
        self.exchange(request, path, Some(CALL_TIMEOUT)).await?;
        Ok(())
    }

    async fn call_json<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &impl serde::Serialize,
    ) -> Result<T> {
        let body: Value = serde_json::to_value(body).map_err(|error| ClientError::Protocol {
            url: format!("{}{path}", self.base_url()),
            reason: error.to_string(),
        })?;
        self.call(method, path, Some(body)).await
    }
}
