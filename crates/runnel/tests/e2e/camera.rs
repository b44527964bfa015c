//! The `camera` source against a local camera server started by the test: a snapshot URL,
//! an MJPEG stream that ends and is reconnected, and a camera that answers errors (shown
//! as a problem on the page), every frame classified.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::log_cli::{Server, free_port, http};

/// Serves `/snap` (a PNG per request), `/stream` (an MJPEG stream of 4 JPEG frames, 100 ms
/// apart, then the connection closes) and `/dead` (503), one thread per connection.
struct CameraServer {
    port: u16,
    streams: Arc<AtomicUsize>,
}

fn camera_server() -> CameraServer {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding the camera server");
    let port = listener.local_addr().expect("addr").port();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let png = Arc::new(std::fs::read(repo.join("assets/images/coffee.png")).expect("photo"));
    let jpeg = Arc::new(std::fs::read(repo.join("assets/images/flower.jpg")).expect("photo"));
    let streams = Arc::new(AtomicUsize::new(0));
    let counter = streams.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let (png, jpeg, counter) = (png.clone(), jpeg.clone(), counter.clone());
            std::thread::spawn(move || serve(conn, &png, &jpeg, &counter));
        }
    });
    CameraServer { port, streams }
}

fn serve(mut conn: TcpStream, png: &[u8], jpeg: &[u8], streams: &AtomicUsize) {
    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
    let mut request = String::new();
    if reader.read_line(&mut request).is_err() {
        return;
    }
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
    }
    let path = request.split_whitespace().nth(1).unwrap_or_default();
    let _ = match path {
        "/snap" => conn
            .write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n",
                    png.len()
                )
                .as_bytes(),
            )
            .and_then(|()| conn.write_all(png)),
        "/stream" => {
            streams.fetch_add(1, Ordering::SeqCst);
            let mut r = conn.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=frame\r\n\
                  Connection: close\r\n\r\n",
            );
            for _ in 0..4 {
                r = r
                    .and_then(|()| {
                        conn.write_all(
                            format!(
                                "--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
                                jpeg.len()
                            )
                            .as_bytes(),
                        )
                    })
                    .and_then(|()| conn.write_all(jpeg))
                    .and_then(|()| conn.write_all(b"\r\n"));
                std::thread::sleep(Duration::from_millis(100));
            }
            r
        }
        _ => conn.write_all(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        ),
    };
}

#[test]
fn camera_source_reads_snapshots_and_mjpeg_and_shows_a_dead_camera() {
    let cams = camera_server();
    let dir = tempfile::tempdir().expect("temp dir");
    let p = cams.port;
    std::fs::write(
        dir.path().join("cams.sql"),
        format!(
            "SET 'pipeline.name' = 'cams';
CREATE TABLE cams (
  camera STRING METADATA FROM 'camera',
  captured TIMESTAMP_LTZ(3) METADATA FROM 'timestamp',
  image BYTES
) WITH (connector = 'camera', interval = '200 ms', timeout = '2 s',
  cameras = 'door=http://127.0.0.1:{p}/snap; yard=http://127.0.0.1:{p}/stream; gone=http://127.0.0.1:{p}/dead');
CREATE TABLE seen (camera STRING, captured TIMESTAMP_LTZ(3), label STRING, score DOUBLE)
  WITH (connector = 'log', topic = 'seen', format = 'json');
INSERT INTO seen
SELECT camera, captured, p['label'], p['score'] FROM (SELECT camera, captured, classify(image) AS p FROM cams);
"
        ),
    )
    .expect("writing the pipeline");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let _run = Server::spawn(
        dir.path(),
        port,
        &[
            "run",
            "cams.sql",
            "--listen",
            &listen,
            "--data-dir",
            "data",
            "-p",
            "2",
        ],
    );
    // Frames from both working cameras, classified; the stream reconnected after it ended.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (per_camera, labels) = loop {
        let mut per_camera: BTreeMap<String, usize> = BTreeMap::new();
        let mut labels: BTreeMap<String, String> = BTreeMap::new();
        let (status, body) =
            http(port, "GET", "/v1/topics/seen/records?max=10000", &[], b"").expect("reading seen");
        if status == 200 {
            for line in body.lines().filter(|l| !l.trim().is_empty()) {
                let r: Value = serde_json::from_str(line).expect("a record");
                let row = &r["value"];
                let camera = row["camera"].as_str().unwrap_or_default().to_string();
                assert!(
                    row["captured"].is_string() || row["captured"].is_number(),
                    "{row}"
                );
                assert!(row["score"].as_f64().unwrap_or(0.0) > 0.0, "{row}");
                *per_camera.entry(camera.clone()).or_default() += 1;
                labels.insert(
                    camera,
                    row["label"].as_str().unwrap_or_default().to_string(),
                );
            }
        }
        if per_camera.get("door").copied().unwrap_or(0) >= 3
            && per_camera.get("yard").copied().unwrap_or(0) >= 5
            && cams.streams.load(Ordering::SeqCst) >= 2
        {
            break (per_camera, labels);
        }
        assert!(
            Instant::now() < deadline,
            "not enough frames: {per_camera:?}, streams opened {}",
            cams.streams.load(Ordering::SeqCst)
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(!per_camera.contains_key("gone"), "{per_camera:?}");
    assert!(
        !labels["door"].is_empty() && !labels["yard"].is_empty(),
        "{labels:?}"
    );
    // The dead camera is shown as the source's problem.
    let (status, body) = http(port, "GET", "/api/pipelines/cams", &[], b"").expect("status");
    assert_eq!(status, 200, "{body}");
    let status: Value = serde_json::from_str(&body).expect("JSON");
    let problem = status["nodes"]
        .as_array()
        .and_then(|n| n.iter().find_map(|n| n["problem"].as_str()))
        .unwrap_or_default()
        .to_string();
    assert!(
        problem.contains("camera gone") && problem.contains("503"),
        "{problem}"
    );
}

#[test]
fn camera_options_are_checked() {
    let dir = crate::harness::TestDir::new();
    dir.write(
        "bad.sql",
        "CREATE TABLE cams (image BYTES, note STRING) WITH (connector = 'camera', cameras = 'a=http://x/1');
CREATE TABLE o (image BYTES) WITH (connector = 'blackhole');
INSERT INTO o SELECT image FROM cams;
",
    );
    dir.runnel(&["check", "bad.sql"])
        .assert_err("one BYTES column (the image)");
    dir.write(
        "bad2.sql",
        "CREATE TABLE cams (image BYTES) WITH (connector = 'camera', cameras = 'a=rtsp://x/1');
CREATE TABLE o (image BYTES) WITH (connector = 'blackhole');
INSERT INTO o SELECT image FROM cams;
",
    );
    dir.runnel(&["check", "bad2.sql"])
        .assert_err("not an http:// or https:// URL");
}
