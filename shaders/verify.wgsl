// Segment verification: one invocation per segment.
//
// Appended to a suite file (sha256.wgsl or blake3.wgsl) that defines
// `chain_step`. Each invocation advances its segment's value by at most
// `params.steps` steps and keeps the value and the steps left in its lane,
// so the host can split a long segment over several short dispatches
// (drivers kill dispatches that run too long). When no steps are left it
// compares the value with the claimed end and writes a pass flag.
//
// The host never asks for more than 65,535 steps per dispatch: llvmpipe
// (lavapipe) ends every loop of an invocation after 65,535 iterations in all
// (gallivm's LP_MAX_TGSI_LOOP_ITERATIONS), silently. Should a driver still
// end the loop early, the lane is flagged CUT, a device failure on the host,
// never a verdict.

struct Lane {
    // The chain value so far, in the suite's word order.
    value: array<u32, 8>,
    // The claimed end value.
    end: array<u32, 8>,
    // Steps still to run, as a 64-bit count (low word, high word).
    left: vec2<u32>,
}

struct Params {
    // Segments in this batch.
    lanes: u32,
    // The most steps any lane runs in this dispatch (>= 1).
    steps: u32,
}

// Per segment: 0 = still walking, 1 = end matches, 2 = end differs,
// 3 = the driver ended the step loop early.
const WALKING: u32 = 0u;
const MATCH: u32 = 1u;
const MISMATCH: u32 = 2u;
const CUT: u32 = 3u;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> lanes: array<Lane>;
@group(0) @binding(2) var<storage, read_write> flags: array<u32>;

@compute @workgroup_size(64)
fn verify(@builtin(global_invocation_id) id: vec3<u32>) {
    let i = id.x;
    if i >= params.lanes || flags[i] != WALKING {
        return;
    }
    var left = lanes[i].left;
    var n = params.steps;
    if left.y == 0u && left.x < n {
        n = left.x;
    }
    var v = lanes[i].value;
    var k = 0u;
    while k < n {
        v = chain_step(v);
        k++;
    }
    if k != n {
        flags[i] = CUT;
        return;
    }
    // left -= n, borrowing from the high word.
    if left.x < n {
        left.y -= 1u;
    }
    left.x -= n;
    lanes[i].value = v;
    lanes[i].left = left;
    if left.x == 0u && left.y == 0u {
        // Constant indices only: indexing `v` with a variable would make
        // GPUs keep it in local memory, slowing the loop above.
        let e = lanes[i].end;
        let same = v[0] == e[0] && v[1] == e[1] && v[2] == e[2] && v[3] == e[3]
            && v[4] == e[4] && v[5] == e[5] && v[6] == e[6] && v[7] == e[7];
        flags[i] = select(MISMATCH, MATCH, same);
    }
}
