//! The russh side: who may log in, and what each channel does.

use std::sync::Arc;
use std::time::Duration;

use russh::server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, ChannelOpenFailure};

use crate::Shared;

/// How long a `ssh -L`/`-D` target may take to accept.
const FORWARD_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// One SSH connection.
pub(crate) struct ConnectionHandler {
    pub(crate) shared: Arc<Shared>,
}

impl ConnectionHandler {
    fn is_authorized(&self, key: &ssh_key::PublicKey) -> bool {
        key.key_data() == self.shared.settings.authorized_key.key_data()
    }
}

impl russh::server::Handler for ConnectionHandler {
    type Error = russh::Error;

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        // Refuse other keys before the client signs with them.
        if self.is_authorized(offer.public_key) {
            Ok(Auth::Accept)
        } else {
            tracing::info!(%user, "refused a key that is not the injected one");
            Ok(Auth::reject())
        }
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        if self.is_authorized(key.public_key) {
            // Any user name is accepted: the key is the credential, and sessions run as the
            // user this server runs as.
            tracing::info!(%user, "login");
            Ok(Auth::Accept)
        } else {
            Ok(Auth::reject())
        }
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply.accept().await;
        let handle = session.handle();
        let login = Arc::clone(&self.shared.login);
        let groups = self.shared.groups.clone();
        tokio::spawn(crate::process::run(channel, handle, login, groups));
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _cols: u32,
        _rows: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        _name: &str,
        _value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        _command: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if name == "sftp" {
            session.channel_success(channel)
        } else {
            tracing::info!(subsystem = %name, "refused an unavailable subsystem");
            session.channel_failure(channel)
        }
    }

    async fn window_change_request(
        &mut self,
        _channel: ChannelId,
        _cols: u32,
        _rows: u32,
        _pix_width: u32,
        _pix_height: u32,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        // The channel's task receives the same request and resizes the pty.
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host: &str,
        port: u32,
        _originator: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Ok(port) = u16::try_from(port) else {
            reply.reject(ChannelOpenFailure::ConnectFailed).await;
            return Ok(());
        };
        let host = host.to_owned();
        // Connect off the session loop: a slow target must not stall other channels.
        tokio::spawn(async move {
            let connect = tokio::net::TcpStream::connect((host.as_str(), port));
            if let Ok(Ok(mut tcp)) = tokio::time::timeout(FORWARD_CONNECT_TIMEOUT, connect).await {
                reply.accept().await;
                let mut stream = channel.into_stream();
                let _ = tokio::io::copy_bidirectional(&mut stream, &mut tcp).await;
            } else {
                tracing::info!(%host, port, "forwarding target not reachable");
                reply.reject(ChannelOpenFailure::ConnectFailed).await;
            }
        });
        Ok(())
    }
}
