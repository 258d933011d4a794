// SHA-256 chain step on 32-bit words, for the verification kernel (verify.wgsl).
//
// A chain value is eight big-endian words (the host converts bytes once per
// segment), so one step's output is the next step's message without any byte
// swapping. One step hashes exactly 32 bytes: a single 64-byte block whose
// second half is the fixed padding (0x80, zeros, bit length 256).
//
// The 64 rounds are written out with literal constants and fixed indices:
// indexing a constant array with a loop counter makes naga copy it into a
// per-invocation array, which GPUs keep in slow local memory.

const IV = array<u32, 8>(
    0x6a09e667u, 0xbb67ae85u, 0x3c6ef372u, 0xa54ff53au,
    0x510e527fu, 0x9b05688cu, 0x1f83d9abu, 0x5be0cd19u,
);

fn rotr(x: u32, n: u32) -> u32 {
    return (x >> n) | (x << (32u - n));
}

// One round: `kw` is K[t] + W[t]. Returns the rotated working state
// (a..h), so successive calls need no renaming.
fn rnd(s: array<u32, 8>, kw: u32) -> array<u32, 8> {
    let e = s[4];
    let a = s[0];
    let t1 = s[7] + (rotr(e, 6u) ^ rotr(e, 11u) ^ rotr(e, 25u)) + ((e & s[5]) ^ (~e & s[6])) + kw;
    let t2 = (rotr(a, 2u) ^ rotr(a, 13u) ^ rotr(a, 22u)) + ((a & s[1]) ^ (a & s[2]) ^ (s[1] & s[2]));
    return array<u32, 8>(t1 + t2, a, s[1], s[2], s[3] + t1, e, s[5], s[6]);
}

fn sigma0(x: u32) -> u32 {
    return rotr(x, 7u) ^ rotr(x, 18u) ^ (x >> 3u);
}

fn sigma1(x: u32) -> u32 {
    return rotr(x, 17u) ^ rotr(x, 19u) ^ (x >> 10u);
}

// The next 16 message-schedule words from the previous 16 (W[t] for
// t = 16..63 in three calls), on a rolling window.
fn expand(w: array<u32, 16>) -> array<u32, 16> {
    var x = w;
    x[0] = sigma1(x[14]) + x[9] + sigma0(x[1]) + x[0];
    x[1] = sigma1(x[15]) + x[10] + sigma0(x[2]) + x[1];
    x[2] = sigma1(x[0]) + x[11] + sigma0(x[3]) + x[2];
    x[3] = sigma1(x[1]) + x[12] + sigma0(x[4]) + x[3];
    x[4] = sigma1(x[2]) + x[13] + sigma0(x[5]) + x[4];
    x[5] = sigma1(x[3]) + x[14] + sigma0(x[6]) + x[5];
    x[6] = sigma1(x[4]) + x[15] + sigma0(x[7]) + x[6];
    x[7] = sigma1(x[5]) + x[0] + sigma0(x[8]) + x[7];
    x[8] = sigma1(x[6]) + x[1] + sigma0(x[9]) + x[8];
    x[9] = sigma1(x[7]) + x[2] + sigma0(x[10]) + x[9];
    x[10] = sigma1(x[8]) + x[3] + sigma0(x[11]) + x[10];
    x[11] = sigma1(x[9]) + x[4] + sigma0(x[12]) + x[11];
    x[12] = sigma1(x[10]) + x[5] + sigma0(x[13]) + x[12];
    x[13] = sigma1(x[11]) + x[6] + sigma0(x[14]) + x[13];
    x[14] = sigma1(x[12]) + x[7] + sigma0(x[15]) + x[14];
    x[15] = sigma1(x[13]) + x[8] + sigma0(x[0]) + x[15];
    return x;
}

// x -> SHA-256(x) for a 32-byte x given as eight big-endian words.
fn chain_step(x: array<u32, 8>) -> array<u32, 8> {
    var w = array<u32, 16>(
        x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7],
        0x80000000u, 0u, 0u, 0u, 0u, 0u, 0u, 256u,
    );
    var s = IV;
    s = rnd(s, 0x428a2f98u + w[0]);
    s = rnd(s, 0x71374491u + w[1]);
    s = rnd(s, 0xb5c0fbcfu + w[2]);
    s = rnd(s, 0xe9b5dba5u + w[3]);
    s = rnd(s, 0x3956c25bu + w[4]);
    s = rnd(s, 0x59f111f1u + w[5]);
    s = rnd(s, 0x923f82a4u + w[6]);
    s = rnd(s, 0xab1c5ed5u + w[7]);
    s = rnd(s, 0xd807aa98u + w[8]);
    s = rnd(s, 0x12835b01u + w[9]);
    s = rnd(s, 0x243185beu + w[10]);
    s = rnd(s, 0x550c7dc3u + w[11]);
    s = rnd(s, 0x72be5d74u + w[12]);
    s = rnd(s, 0x80deb1feu + w[13]);
    s = rnd(s, 0x9bdc06a7u + w[14]);
    s = rnd(s, 0xc19bf174u + w[15]);
    w = expand(w);
    s = rnd(s, 0xe49b69c1u + w[0]);
    s = rnd(s, 0xefbe4786u + w[1]);
    s = rnd(s, 0x0fc19dc6u + w[2]);
    s = rnd(s, 0x240ca1ccu + w[3]);
    s = rnd(s, 0x2de92c6fu + w[4]);
    s = rnd(s, 0x4a7484aau + w[5]);
    s = rnd(s, 0x5cb0a9dcu + w[6]);
    s = rnd(s, 0x76f988dau + w[7]);
    s = rnd(s, 0x983e5152u + w[8]);
    s = rnd(s, 0xa831c66du + w[9]);
    s = rnd(s, 0xb00327c8u + w[10]);
    s = rnd(s, 0xbf597fc7u + w[11]);
    s = rnd(s, 0xc6e00bf3u + w[12]);
    s = rnd(s, 0xd5a79147u + w[13]);
    s = rnd(s, 0x06ca6351u + w[14]);
    s = rnd(s, 0x14292967u + w[15]);
    w = expand(w);
    s = rnd(s, 0x27b70a85u + w[0]);
    s = rnd(s, 0x2e1b2138u + w[1]);
    s = rnd(s, 0x4d2c6dfcu + w[2]);
    s = rnd(s, 0x53380d13u + w[3]);
    s = rnd(s, 0x650a7354u + w[4]);
    s = rnd(s, 0x766a0abbu + w[5]);
    s = rnd(s, 0x81c2c92eu + w[6]);
    s = rnd(s, 0x92722c85u + w[7]);
    s = rnd(s, 0xa2bfe8a1u + w[8]);
    s = rnd(s, 0xa81a664bu + w[9]);
    s = rnd(s, 0xc24b8b70u + w[10]);
    s = rnd(s, 0xc76c51a3u + w[11]);
    s = rnd(s, 0xd192e819u + w[12]);
    s = rnd(s, 0xd6990624u + w[13]);
    s = rnd(s, 0xf40e3585u + w[14]);
    s = rnd(s, 0x106aa070u + w[15]);
    w = expand(w);
    s = rnd(s, 0x19a4c116u + w[0]);
    s = rnd(s, 0x1e376c08u + w[1]);
    s = rnd(s, 0x2748774cu + w[2]);
    s = rnd(s, 0x34b0bcb5u + w[3]);
    s = rnd(s, 0x391c0cb3u + w[4]);
    s = rnd(s, 0x4ed8aa4au + w[5]);
    s = rnd(s, 0x5b9cca4fu + w[6]);
    s = rnd(s, 0x682e6ff3u + w[7]);
    s = rnd(s, 0x748f82eeu + w[8]);
    s = rnd(s, 0x78a5636fu + w[9]);
    s = rnd(s, 0x84c87814u + w[10]);
    s = rnd(s, 0x8cc70208u + w[11]);
    s = rnd(s, 0x90befffau + w[12]);
    s = rnd(s, 0xa4506cebu + w[13]);
    s = rnd(s, 0xbef9a3f7u + w[14]);
    s = rnd(s, 0xc67178f2u + w[15]);
    return array<u32, 8>(
        s[0] + IV[0], s[1] + IV[1], s[2] + IV[2], s[3] + IV[3],
        s[4] + IV[4], s[5] + IV[5], s[6] + IV[6], s[7] + IV[7],
    );
}
