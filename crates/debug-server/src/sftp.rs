//! A filesystem SFTP server, so `scp`, `sftp` and VS Code Remote-SSH work in any task image,
//! including slim ones without OpenSSH's `sftp-server`. Runs as the server's user; relative paths
//! are taken from the task's working directory, where sessions start.
#![allow(
    clippy::disallowed_methods,
    reason = "an SFTP server: it creates, opens and renames files in the task as its client asks"
)]

use std::collections::HashMap;
use std::io::{self, SeekFrom};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use russh_sftp::protocol::{
    Attrs, Data, File, FileAttributes, Handle, Name, OpenFlags, Status, StatusCode, Version,
};
use russh_sftp::server::StatusReply;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Largest read answered at once (OpenSSH's sftp-server answers up to 256 KiB too).
const MAX_READ: u32 = 256 * 1024;
/// Directory entries returned per READDIR reply.
const ENTRIES_PER_REPLY: usize = 128;

/// A stream that says when it is dropped.
pub(crate) struct Watched<S> {
    inner: S,
    dropped: Option<tokio::sync::oneshot::Sender<()>>,
}

/// Wrap `stream`; the receiver resolves when the wrapper is dropped.
pub(crate) fn watched<S>(stream: S) -> (tokio::sync::oneshot::Receiver<()>, Watched<S>) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    (
        rx,
        Watched {
            inner: stream,
            dropped: Some(tx),
        },
    )
}

impl<S> Drop for Watched<S> {
    fn drop(&mut self) {
        if let Some(tx) = self.dropped.take() {
            let _ = tx.send(());
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

enum OpenHandle {
    File(tokio::fs::File),
    /// Entries not yet returned; empty once the listing is done.
    Dir(Vec<File>),
}

pub(crate) struct FsSftp {
    workdir: PathBuf,
    handles: HashMap<String, OpenHandle>,
    next_handle: u64,
}

impl FsSftp {
    pub(crate) fn new(workdir: PathBuf) -> Self {
        Self {
            workdir,
            handles: HashMap::new(),
            next_handle: 0,
        }
    }

    fn path(&self, path: &str) -> PathBuf {
        if path.is_empty() {
            self.workdir.clone()
        } else {
            self.workdir.join(path)
        }
    }

    fn add(&mut self, handle: OpenHandle) -> String {
        self.next_handle += 1;
        let name = self.next_handle.to_string();
        self.handles.insert(name.clone(), handle);
        name
    }

    fn file(&mut self, handle: &str) -> Result<&mut tokio::fs::File, StatusReply> {
        match self.handles.get_mut(handle) {
            Some(OpenHandle::File(file)) => Ok(file),
            _ => Err(reply(StatusCode::Failure, "not an open file handle")),
        }
    }
}

fn reply(code: StatusCode, message: &str) -> StatusReply {
    let mut status = StatusReply::new(code);
    status.error_message = Some(message.to_owned());
    status
}

fn io_reply(error: &io::Error) -> StatusReply {
    let code = match error.kind() {
        io::ErrorKind::NotFound => StatusCode::NoSuchFile,
        io::ErrorKind::PermissionDenied => StatusCode::PermissionDenied,
        _ => StatusCode::Failure,
    };
    reply(code, &error.to_string())
}

fn ok(id: u32) -> Status {
    Status {
        id,
        status_code: StatusCode::Ok,
        error_message: "Ok".to_owned(),
        language_tag: "en-US".to_owned(),
    }
}

/// `a/./b/../c` as `a/c`, for paths that do not exist yet (realpath of a file to create).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// SETSTAT: the mode and the size, the attributes clients set (times are left as they are).
async fn apply_attrs(path: &Path, attrs: &FileAttributes) -> io::Result<()> {
    if let Some(mode) = attrs.permissions {
        tokio::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o7777)).await?;
    }
    if let Some(size) = attrs.size {
        let file = tokio::fs::OpenOptions::new().write(true).open(path).await?;
        file.set_len(size).await?;
    }
    Ok(())
}

impl russh_sftp::server::Handler for FsSftp {
    type Error = StatusReply;

    fn unimplemented(&self) -> Self::Error {
        reply(StatusCode::OpUnsupported, "not supported by this server")
    }

    async fn init(
        &mut self,
        _version: u32,
        _extensions: HashMap<String, String>,
    ) -> Result<Version, Self::Error> {
        Ok(Version::new())
    }

    async fn realpath(&mut self, id: u32, path: String) -> Result<Name, Self::Error> {
        let full = self.path(&path);
        let real = tokio::fs::canonicalize(&full)
            .await
            .unwrap_or_else(|_| normalize(&full));
        Ok(Name {
            id,
            files: vec![File::dummy(real.to_string_lossy())],
        })
    }

    async fn open(
        &mut self,
        id: u32,
        filename: String,
        pflags: OpenFlags,
        attrs: FileAttributes,
    ) -> Result<Handle, Self::Error> {
        let mut options = tokio::fs::OpenOptions::new();
        options
            .read(pflags.contains(OpenFlags::READ))
            .write(pflags.contains(OpenFlags::WRITE) || pflags.contains(OpenFlags::APPEND))
            .append(pflags.contains(OpenFlags::APPEND))
            .truncate(pflags.contains(OpenFlags::TRUNCATE))
            .mode(attrs.permissions.map_or(0o644, |m| m & 0o7777));
        if pflags.contains(OpenFlags::EXCLUDE) {
            options.create_new(true);
        } else if pflags.contains(OpenFlags::CREATE) {
            options.create(true);
        }
        let file = options
            .open(self.path(&filename))
            .await
            .map_err(|e| io_reply(&e))?;
        Ok(Handle {
            id,
            handle: self.add(OpenHandle::File(file)),
        })
    }

    async fn close(&mut self, id: u32, handle: String) -> Result<Status, Self::Error> {
        match self.handles.remove(&handle) {
            Some(OpenHandle::File(mut file)) => file.flush().await.map_err(|e| io_reply(&e))?,
            Some(OpenHandle::Dir(_)) => {}
            None => return Err(reply(StatusCode::Failure, "unknown handle")),
        }
        Ok(ok(id))
    }

    async fn read(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        len: u32,
    ) -> Result<Data, Self::Error> {
        let file = self.file(&handle)?;
        file.seek(SeekFrom::Start(offset))
            .await
            .map_err(|e| io_reply(&e))?;
        let mut data = vec![0u8; len.min(MAX_READ) as usize];
        let mut filled = 0;
        // Fill the reply unless the file ends: clients treat a short read as fine, but fewer,
        // fuller replies are faster.
        while filled < data.len() {
            let n = file
                .read(&mut data[filled..])
                .await
                .map_err(|e| io_reply(&e))?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            return Err(reply(StatusCode::Eof, "end of file"));
        }
        data.truncate(filled);
        Ok(Data { id, data })
    }

    async fn write(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        data: Vec<u8>,
    ) -> Result<Status, Self::Error> {
        let file = self.file(&handle)?;
        file.seek(SeekFrom::Start(offset))
            .await
            .map_err(|e| io_reply(&e))?;
        file.write_all(&data).await.map_err(|e| io_reply(&e))?;
        Ok(ok(id))
    }

    async fn lstat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        let meta = tokio::fs::symlink_metadata(self.path(&path))
            .await
            .map_err(|e| io_reply(&e))?;
        Ok(Attrs {
            id,
            attrs: FileAttributes::from(&meta),
        })
    }

    async fn stat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        let meta = tokio::fs::metadata(self.path(&path))
            .await
            .map_err(|e| io_reply(&e))?;
        Ok(Attrs {
            id,
            attrs: FileAttributes::from(&meta),
        })
    }

    async fn fstat(&mut self, id: u32, handle: String) -> Result<Attrs, Self::Error> {
        let meta = self
            .file(&handle)?
            .metadata()
            .await
            .map_err(|e| io_reply(&e))?;
        Ok(Attrs {
            id,
            attrs: FileAttributes::from(&meta),
        })
    }

    async fn setstat(
        &mut self,
        id: u32,
        path: String,
        attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        apply_attrs(&self.path(&path), &attrs)
            .await
            .map_err(|e| io_reply(&e))?;
        Ok(ok(id))
    }

    async fn fsetstat(
        &mut self,
        id: u32,
        handle: String,
        attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        let file = self.file(&handle)?;
        if let Some(mode) = attrs.permissions {
            file.set_permissions(std::fs::Permissions::from_mode(mode & 0o7777))
                .await
                .map_err(|e| io_reply(&e))?;
        }
        if let Some(size) = attrs.size {
            file.set_len(size).await.map_err(|e| io_reply(&e))?;
        }
        Ok(ok(id))
    }

    async fn opendir(&mut self, id: u32, path: String) -> Result<Handle, Self::Error> {
        let dir = self.path(&path);
        let mut reader = tokio::fs::read_dir(&dir).await.map_err(|e| io_reply(&e))?;
        let mut entries = Vec::new();
        for special in [".", ".."] {
            if let Ok(meta) = tokio::fs::metadata(dir.join(special)).await {
                entries.push(File::new(special, FileAttributes::from(&meta)));
            }
        }
        while let Some(entry) = reader.next_entry().await.map_err(|e| io_reply(&e))? {
            // An entry that vanished between listing and stat is simply left out.
            if let Ok(meta) = tokio::fs::symlink_metadata(entry.path()).await {
                entries.push(File::new(
                    entry.file_name().to_string_lossy(),
                    FileAttributes::from(&meta),
                ));
            }
        }
        entries.reverse(); // popped from the end, so replies come in directory order
        Ok(Handle {
            id,
            handle: self.add(OpenHandle::Dir(entries)),
        })
    }

    async fn readdir(&mut self, id: u32, handle: String) -> Result<Name, Self::Error> {
        let Some(OpenHandle::Dir(pending)) = self.handles.get_mut(&handle) else {
            return Err(reply(StatusCode::Failure, "not an open directory handle"));
        };
        if pending.is_empty() {
            return Err(reply(StatusCode::Eof, "end of directory"));
        }
        let take = pending.len().min(ENTRIES_PER_REPLY);
        let files = pending
            .split_off(pending.len() - take)
            .into_iter()
            .rev()
            .collect();
        Ok(Name { id, files })
    }

    async fn remove(&mut self, id: u32, filename: String) -> Result<Status, Self::Error> {
        tokio::fs::remove_file(self.path(&filename))
            .await
            .map_err(|e| io_reply(&e))?;
        Ok(ok(id))
    }

    async fn mkdir(
        &mut self,
        id: u32,
        path: String,
        attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        let mut builder = tokio::fs::DirBuilder::new();
        builder.mode(attrs.permissions.map_or(0o755, |m| m & 0o7777));
        builder
            .create(self.path(&path))
            .await
            .map_err(|e| io_reply(&e))?;
        Ok(ok(id))
    }

    async fn rmdir(&mut self, id: u32, path: String) -> Result<Status, Self::Error> {
        tokio::fs::remove_dir(self.path(&path))
            .await
            .map_err(|e| io_reply(&e))?;
        Ok(ok(id))
    }

    async fn rename(
        &mut self,
        id: u32,
        oldpath: String,
        newpath: String,
    ) -> Result<Status, Self::Error> {
        tokio::fs::rename(self.path(&oldpath), self.path(&newpath))
            .await
            .map_err(|e| io_reply(&e))?;
        Ok(ok(id))
    }

    async fn readlink(&mut self, id: u32, path: String) -> Result<Name, Self::Error> {
        let target = tokio::fs::read_link(self.path(&path))
            .await
            .map_err(|e| io_reply(&e))?;
        Ok(Name {
            id,
            files: vec![File::dummy(target.to_string_lossy())],
        })
    }

    async fn symlink(
        &mut self,
        id: u32,
        linkpath: String,
        targetpath: String,
    ) -> Result<Status, Self::Error> {
        // OpenSSH's client sends the two paths in the opposite order to the draft's: the first is
        // the existing target. Follow OpenSSH, which every client is tested against.
        let (target, link) = (linkpath, targetpath);
        tokio::fs::symlink(&target, self.path(&link))
            .await
            .map_err(|e| io_reply(&e))?;
        Ok(ok(id))
    }
}
