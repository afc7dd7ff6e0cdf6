//! Per-request cost of the HTTP/1 front's checks: the nginx head rules on a
//! typical browser-sized head, and the path check on a plain and an escaped
//! path. These run once for every HTTP/1 request.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use gateway::proxy::h1_guard::{check_request_head, HeadLimits};
use gateway::router::check_request_path;

const HEAD: &[u8] = b"GET /api/v1/orders/12345?expand=items&limit=20 HTTP/1.1\r\n\
Host: shop.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36\r\n\
Accept: application/json, text/plain, */*\r\n\
Accept-Encoding: gzip, deflate, br\r\n\
Accept-Language: en-US,en;q=0.9\r\n\
Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.abc\r\n\
Cookie: session=4f6a1c2b9e; theme=dark\r\n\
X-Request-Id: 7d3c1b4e-1f2a-4c5d-9e8f-0a1b2c3d4e5f\r\n\
Connection: keep-alive\r\n\r\n";

fn bench(c: &mut Criterion) {
    let limits = HeadLimits::default();
    c.bench_function("h1 head check (10 fields, 480 B)", |b| {
        b.iter(|| check_request_head(black_box(HEAD), &limits))
    });
    c.bench_function("path check (plain)", |b| {
        b.iter(|| check_request_path(black_box(b"/api/v1/orders/12345")))
    });
    c.bench_function("path check (escapes and dots)", |b| {
        b.iter(|| check_request_path(black_box(b"/api/v1/../v2/%2e/orders%2F12345/./x")))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
