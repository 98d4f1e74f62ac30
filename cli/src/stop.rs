//! An orderly stop on SIGTERM or Ctrl-C: the engine stops starting
//! transactions, the ones in flight get their replies recorded within
//! `[delivery] stop_timeout`, and only then does the process exit, so an
//! ordinary restart sends nothing twice.

use std::future::Future;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::signal::unix::{signal, Signal, SignalKind};
use volley_engine::{Engine, EngineError, RunReport};

/// SIGTERM and SIGINT (Ctrl-C), listened for from creation on.
pub struct StopSignals {
    term: Signal,
    int: Signal,
}

impl StopSignals {
    /// Starts listening; from then on the signals no longer end the process.
    pub fn new() -> Result<StopSignals> {
        Ok(StopSignals {
            term: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
        })
    }

    /// Waits for either signal.
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

/// How a round ended.
pub enum Round {
    /// It ran to its end.
    Done(RunReport),
    /// A stop signal came: the round was given the grace period; its report
    /// when it finished within it.
    Stopped(Option<RunReport>),
}

/// Runs `round` (the engine's) to its end, unless a stop signal comes first:
/// then the engine is stopped and the round given `grace` to record the
/// replies of the transactions in flight.
pub async fn run_round(
    engine: &Engine,
    round: impl Future<Output = Result<RunReport, EngineError>>,
    signals: &mut StopSignals,
    grace: Duration,
) -> Result<Round> {
    tokio::pin!(round);
    tokio::select! {
        report = &mut round => Ok(Round::Done(report?)),
        () = signals.recv() => {
            tracing::info!(grace = ?grace, "stopping: waiting for the replies of the transactions in flight");
            engine.stop();
            match tokio::time::timeout(grace, &mut round).await {
                Ok(report) => Ok(Round::Stopped(Some(report?))),
                Err(_) => {
                    tracing::warn!(grace = ?grace, "stop timeout: transactions still in flight are abandoned; their recipients may be sent again after the restart");
                    Ok(Round::Stopped(None))
                }
            }
        }
    }
}
