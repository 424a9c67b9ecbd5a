//! A minimal device-side MQTT 3.1.1 connection over the same codec the
//! gateway uses. The simulator and the tests speak MQTT through it.

use std::time::Duration;

use bytes::BytesMut;
use rumqttc::mqttbytes::Error as CodecError;
use rumqttc::mqttbytes::v4::{ConnAck, Connect, Login, Packet};
use thingcall_sign::SignMethod;
use thingcall_sign::device::{MqttClientId, password, password_content, username};
use thingcall_transport::DeviceKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// Credentials for one device, ready for CONNECT.
#[derive(Clone, Debug)]
pub struct Credentials {
    /// The full client id with its extension block.
    pub client_id: String,
    /// `deviceName&productKey`.
    pub username: String,
    /// The hex HMAC.
    pub password: String,
}

/// Options for [`credentials`].
#[derive(Clone, Copy, Debug)]
pub struct CredentialOptions {
    /// The password HMAC.
    pub sign_method: SignMethod,
    /// Ask for `/ext/rrpc/` RRPC (`ext=1`).
    pub ext: bool,
    /// Ask for automatic subscription (`_ss=1`).
    pub auto_subscribe: bool,
}

impl Default for CredentialOptions {
    fn default() -> CredentialOptions {
        CredentialOptions {
            sign_method: SignMethod::HmacSha256,
            ext: false,
            auto_subscribe: false,
        }
    }
}

/// Makes one-device-one-secret credentials (client id `PK.DN`, no timestamp).
pub fn credentials(device: &DeviceKey, secret: &str, opts: CredentialOptions) -> Credentials {
    let (pk, dn) = (device.product_key.as_str(), device.device_name.as_str());
    let bare = format!("{pk}.{dn}");
    let mut id = MqttClientId::new(bare.as_str())
        .with("securemode", "3")
        .with("signmethod", opts.sign_method.as_str());
    if opts.ext {
        id = id.with("ext", "1");
    }
    if opts.auto_subscribe {
        id = id.with("_ss", "1");
    }
    Credentials {
        client_id: id.to_string(),
        username: username(dn, pk),
        password: password(
            opts.sign_method,
            secret,
            &password_content(&bare, dn, pk, None),
        ),
    }
}

/// A CONNECT packet for the credentials.
pub fn connect_packet(c: &Credentials, keep_alive: u16, clean_session: bool) -> Connect {
    let mut connect = Connect::new(c.client_id.clone());
    connect.keep_alive = keep_alive;
    connect.clean_session = clean_session;
    connect.login = Some(Login::new(c.username.clone(), c.password.clone()));
    connect
}

/// Reading half of a connection.
#[derive(Debug)]
pub struct Reader {
    rd: OwnedReadHalf,
    buf: BytesMut,
}

/// Writing half of a connection.
#[derive(Debug)]
pub struct Writer {
    wr: OwnedWriteHalf,
    out: BytesMut,
}

/// Why a connection failed.
#[derive(Debug)]
pub enum ClientError {
    /// A socket error.
    Io(std::io::Error),
    /// The peer sent something the codec rejects.
    Codec(String),
    /// The peer closed the connection.
    Closed,
    /// Nothing arrived in time.
    Timeout,
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Io(e) => write!(f, "socket error: {e}"),
            ClientError::Codec(e) => write!(f, "protocol error: {e}"),
            ClientError::Closed => f.write_str("connection closed"),
            ClientError::Timeout => f.write_str("timed out"),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<std::io::Error> for ClientError {
    fn from(e: std::io::Error) -> ClientError {
        ClientError::Io(e)
    }
}

impl Reader {
    /// The next packet; `Err(Closed)` at end of stream.
    pub async fn recv(&mut self) -> Result<Packet, ClientError> {
        loop {
            match Packet::read(&mut self.buf, usize::MAX) {
                Ok(p) => return Ok(p),
                Err(CodecError::InsufficientBytes(_)) => {}
                Err(e) => return Err(ClientError::Codec(e.to_string())),
            }
            if self.rd.read_buf(&mut self.buf).await? == 0 {
                return Err(ClientError::Closed);
            }
        }
    }

    /// The next packet within `limit`.
    pub async fn recv_timeout(&mut self, limit: Duration) -> Result<Packet, ClientError> {
        tokio::time::timeout(limit, self.recv())
            .await
            .map_err(|_| ClientError::Timeout)?
    }
}

impl Writer {
    /// Sends one packet.
    pub async fn send(&mut self, packet: &Packet) -> Result<(), ClientError> {
        self.out.clear();
        packet
            .write(&mut self.out, usize::MAX)
            .map_err(|e| ClientError::Codec(e.to_string()))?;
        self.wr.write_all(&self.out).await?;
        Ok(())
    }

    /// Sends raw bytes (tests use this for malformed frames).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.wr.write_all(bytes).await?;
        Ok(())
    }
}

/// Opens a TCP connection (with TCP_NODELAY), sends CONNECT and returns the
/// CONNACK with both halves of the connection.
pub async fn connect(
    addr: &str,
    connect: Connect,
) -> Result<(ConnAck, Reader, Writer), ClientError> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (rd, wr) = stream.into_split();
    let mut reader = Reader {
        rd,
        buf: BytesMut::with_capacity(4096),
    };
    let mut writer = Writer {
        wr,
        out: BytesMut::with_capacity(1024),
    };
    writer.send(&Packet::Connect(connect)).await?;
    match reader.recv_timeout(Duration::from_secs(10)).await? {
        Packet::ConnAck(ack) => Ok((ack, reader, writer)),
        other => Err(ClientError::Codec(format!(
            "expected CONNACK, got {other:?}"
        ))),
    }
}
