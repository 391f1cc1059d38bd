// Causal attention of T tokens of one sequence over an f16 key/value cache,
// as edgeloop-core's `ops::attend_f16`: one workgroup per (token, query
// head). The query is rounded to f16; scores = scale * q·k over rows
// first..=pos (first = pos + 1 - window with a sliding window); softmax;
// the weights rounded to f16; out = sum_p w_p * v_p. Query head h reads
// key/value head h / (n_heads / n_kv_heads).

struct Params {
    tokens: u32,
    n_heads: u32,
    n_kv_heads: u32,
    head_dim: u32,
    kv_dim: u32,
    capacity: u32,
    window: u32, // 0: no window
    scale: f32,
}

@group(0) @binding(0) var<storage, read> q: array<f32>;       // [T][n_heads * head_dim]
@group(0) @binding(1) var<storage, read> keys: array<u32>;    // f16 pairs, [capacity][kv_dim]
@group(0) @binding(2) var<storage, read> values: array<u32>;
@group(0) @binding(3) var<storage, read> pos: array<u32>;     // [T]
@group(0) @binding(4) var<storage, read_write> scores: array<f32>; // [T][n_heads][capacity]
@group(0) @binding(5) var<storage, read_write> out: array<f32>;    // [T][n_heads * head_dim]
@group(0) @binding(6) var<uniform> p: Params;

const WG: u32 = 64u;
const MAX_HEAD_DIM: u32 = 256u;
var<workgroup> qs: array<f32, 256>;
var<workgroup> partial: array<f32, 64>;

fn f16_of(buf_is_keys: bool, e: u32) -> f32 {
    var word: u32;
    if (buf_is_keys) {
        word = keys[e >> 1u];
    } else {
        word = values[e >> 1u];
    }
    let v = unpack2x16float(word);
    return select(v.x, v.y, (e & 1u) != 0u);
}

fn round_f16(x: f32) -> f32 {
    return unpack2x16float(pack2x16float(vec2<f32>(x, 0.0))).x;
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h = wid.x;
    let t = wid.y;
    let hd = p.head_dim;
    let kv_head = h / (p.n_heads / p.n_kv_heads);
    let q_base = (t * p.n_heads + h) * hd;
    for (var d = lid; d < hd; d += WG) {
        qs[d] = round_f16(q[q_base + d]);
    }
    workgroupBarrier();

    let last = pos[t];
    var first = 0u;
    if (p.window != 0u && last + 1u > p.window) {
        first = last + 1u - p.window;
    }
    let n = last + 1u - first;
    let sc_base = (t * p.n_heads + h) * p.capacity;
    let col = kv_head * hd;

    var m = -3.4028235e38;
    for (var j = lid; j < n; j += WG) {
        let row = (first + j) * p.kv_dim + col;
        var s = 0.0;
        for (var d = 0u; d < hd; d++) {
            s += qs[d] * f16_of(true, row + d);
        }
        s *= p.scale;
        scores[sc_base + j] = s;
        m = max(m, s);
    }
    partial[lid] = m;
    workgroupBarrier();
    for (var k = WG / 2u; k > 0u; k >>= 1u) {
        if (lid < k) {
            partial[lid] = max(partial[lid], partial[lid + k]);
        }
        workgroupBarrier();
    }
    let row_max = partial[0];
    workgroupBarrier();
    var sum = 0.0;
    for (var j = lid; j < n; j += WG) {
        let e = exp(scores[sc_base + j] - row_max);
        scores[sc_base + j] = e;
        sum += e;
    }
    partial[lid] = sum;
    workgroupBarrier();
    for (var k = WG / 2u; k > 0u; k >>= 1u) {
        if (lid < k) {
            partial[lid] += partial[lid + k];
        }
        workgroupBarrier();
    }
    let inv = 1.0 / partial[0];
    for (var j = lid; j < n; j += WG) {
        scores[sc_base + j] = round_f16(scores[sc_base + j] * inv);
    }
    storageBarrier();
    workgroupBarrier();
    for (var d = lid; d < hd; d += WG) {
        var acc = 0.0;
        for (var j = 0u; j < n; j++) {
            acc += scores[sc_base + j] * f16_of(false, (first + j) * p.kv_dim + col + d);
        }
        out[q_base + d] = acc;
    }
}
