// BLAKE3 chain step on 32-bit words, for the verification kernel (verify.wgsl).
//
// A chain value is eight little-endian words. One step is the default
// unkeyed hash of those 32 bytes: a single compression of the zero-padded
// 64-byte block with block_len 32, counter 0 and flags
// CHUNK_START | CHUNK_END | ROOT, keeping the first eight output words.
//
// The 4x4 state is held as four rows of `vec4<u32>` (the layout BLAKE3's SIMD
// implementations use): a column step works on all four columns at once, and
// rotating the rows' lanes turns the diagonals into columns.

const IV = array<u32, 8>(
    0x6a09e667u, 0xbb67ae85u, 0x3c6ef372u, 0xa54ff53au,
    0x510e527fu, 0x9b05688cu, 0x1f83d9abu, 0x5be0cd19u,
);

// CHUNK_START (1) | CHUNK_END (2) | ROOT (8).
const FLAGS: u32 = 11u;
const BLOCK_LEN: u32 = 32u;

struct Rows {
    a: vec4<u32>,
    b: vec4<u32>,
    c: vec4<u32>,
    d: vec4<u32>,
}

fn rotr4(x: vec4<u32>, n: u32) -> vec4<u32> {
    return (x >> vec4<u32>(n)) | (x << vec4<u32>(32u - n));
}

// The G function on four columns (or diagonals) at once.
fn g4(r: Rows, mx: vec4<u32>, my: vec4<u32>) -> Rows {
    var a = r.a + r.b + mx;
    var d = rotr4(r.d ^ a, 16u);
    var c = r.c + d;
    var b = rotr4(r.b ^ c, 12u);
    a = a + b + my;
    d = rotr4(d ^ a, 8u);
    c = c + d;
    b = rotr4(b ^ c, 7u);
    return Rows(a, b, c, d);
}

// One round: columns, then diagonals.
fn compress_round(r: Rows, m: array<u32, 16>) -> Rows {
    var s = g4(r, vec4<u32>(m[0], m[2], m[4], m[6]), vec4<u32>(m[1], m[3], m[5], m[7]));
    // Diagonalise: row b rotates left by one lane, c by two, d by three.
    s = Rows(s.a, s.b.yzwx, s.c.zwxy, s.d.wxyz);
    s = g4(s, vec4<u32>(m[8], m[10], m[12], m[14]), vec4<u32>(m[9], m[11], m[13], m[15]));
    return Rows(s.a, s.b.wxyz, s.c.zwxy, s.d.yzwx);
}

// The message permutation applied between rounds.
fn permute(m: array<u32, 16>) -> array<u32, 16> {
    return array<u32, 16>(
        m[2], m[6], m[3], m[10], m[7], m[0], m[4], m[13],
        m[1], m[11], m[12], m[5], m[9], m[14], m[15], m[8],
    );
}

// x -> BLAKE3(x) for a 32-byte x given as eight little-endian words.
fn chain_step(x: array<u32, 8>) -> array<u32, 8> {
    var m = array<u32, 16>(x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7], 0u, 0u, 0u, 0u, 0u, 0u, 0u, 0u);
    var r = Rows(
        vec4<u32>(IV[0], IV[1], IV[2], IV[3]),
        vec4<u32>(IV[4], IV[5], IV[6], IV[7]),
        vec4<u32>(IV[0], IV[1], IV[2], IV[3]),
        vec4<u32>(0u, 0u, BLOCK_LEN, FLAGS),
    );
    r = compress_round(r, m);
    m = permute(m);
    r = compress_round(r, m);
    m = permute(m);
    r = compress_round(r, m);
    m = permute(m);
    r = compress_round(r, m);
    m = permute(m);
    r = compress_round(r, m);
    m = permute(m);
    r = compress_round(r, m);
    m = permute(m);
    r = compress_round(r, m);
    let lo = r.a ^ r.c;
    let hi = r.b ^ r.d;
    return array<u32, 8>(lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w);
}
