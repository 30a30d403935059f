// gspn_fwd_v2: forward of gspn2d with the inputs of the next NS-1 scan steps in flight through cp.async.
//
// NOT standalone: this file is appended to gspn_fwd.cu (tools/cuda_scan_probe.py compiles
// gspn_fwd.cu + gspn_fwd_v2.cu as one NVRTC source) and reuses its helpers (F32/BF16/F16, Raw, get,
// pack, st_raw, gates3, smem_put/smem_get, StepData, Addr). Same kernel arguments and semantics as
// gspn_fwd (see its header); `pfd` is accepted and ignored (the ring buffer replaces the L2 prefetch).
//
// Same work decomposition as v1: one CTA per (batch, direction, channel slice, window), thread
// tid = l_t*TC + c_t owns VEC consecutive channels at P consecutive line positions, fp32 state in
// registers, neighbour exchange by shuffles + a double-buffered shared-memory edge slot with one
// __syncthreads per step.
//
// What changes: the step inputs travel global -> shared memory with cp.async (16-byte
// cp.async.cg, 4/8-byte cp.async.ca), NS stages in a ring. Iteration t issues the copies of step
// t+NS-1 into stage (t+NS-1) % NS, commits them as one group (an empty group past the window's end,
// so that the group count stays uniform), waits with cp.async.wait_group NS-1 (= the group of step t
// has landed) and reads stage t % NS back into registers. So NS-1 steps of inputs are in flight
// per CTA while step t computes, and no register file is spent on them.
//
// Stage layout (bytes, nthr = blockDim.x; every item is thread-private: a thread reads back only what
// it copied itself, so the ring needs no barrier: cp.async.wait_group makes a thread's own copies
// visible to it, and the stage a thread overwrites at iteration t is the one it read at t-1):
//   stage s at s*SB, SB = nthr*PT, PT = P*(3*CBV + 3*NZL*CBZ);
//   x/lam/u of position j (v = 0, 1, 2):  ((j*3 + v)*nthr + tid)*CBV
//   logit (j, gate k, i < NZL):           3*P*nthr*CBV + (((j*3 + k)*NZL + i)*nthr + tid)*CBZ
//   CBV = max(NBV, 4), CBZ = max(NBZ, 4): a 2-byte item (one bf16/fp16 logit of the broadcast / scalar
//   gate paths, or x/lam/u when VEC == 1) is copied as the aligned 4-byte word holding it and the
//   right half is picked on read (bit 1 of its global address). Consecutive threads hit consecutive
//   CB-byte slots: no bank conflicts for the copies or the reads.
//   After the NS stages: the edge slots of v1, 2*2*(nthr/32)*TC*VEC floats.
// Inactive (channel or position out of range) items are copied with src-size 0 = zero fill.
//
// Requirements (checked by the Python launcher): those of v1, plus dynamic shared memory =
// NS*nthr*PT + 2*2*(nthr/32)*TC*VEC*4 bytes (opt-in above 48 KB), 2 <= NS <= 8; with VEC == 1 and
// 2-byte elements the 4-byte word holding x's last element may extend 2 bytes past x (inside the
// allocation's granule for torch's allocator).

__device__ __forceinline__ unsigned smem_u32(const void* p) {
  u64 a;
  asm("cvta.to.shared.u64 %0, %1;" : "=l"(a) : "l"(p));
  return (unsigned)a;
}

template <int NB>
__device__ __forceinline__ void cp_async(unsigned dst, const void* src, bool valid) {
  const int sz = valid ? NB : 0;  // src-size 0: zero fill, nothing read
  if constexpr (NB == 16) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(sz) : "memory");
  } else if constexpr (NB == 8) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;" ::"r"(dst), "l"(src), "r"(sz) : "memory");
  } else {
    static_assert(NB == 4, "cp.async copies 4, 8 or 16 bytes");
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;" ::"r"(dst), "l"(src), "r"(sz) : "memory");
  }
}

__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }

template <int N>
__device__ __forceinline__ void cp_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

// copy one item of NB bytes (2-byte items: the aligned word holding it)
template <int NB>
__device__ __forceinline__ void stage_item(unsigned dst, const unsigned char* src, bool valid) {
  if constexpr (NB >= 4) {
    cp_async<NB>(dst, src, valid);
  } else {
    cp_async<4>(dst, (const void*)((u64)src & ~(u64)3), valid);
  }
}

// read one item back; src = the global address it was copied from (picks the half of a 2-byte item)
template <int NB>
__device__ __forceinline__ void unstage_item(Raw<NB>& r, const unsigned char* sp, const unsigned char* src) {
  if constexpr (NB == 16) {
    const uint4 q = *reinterpret_cast<const uint4*>(sp);
    r.w[0] = q.x;
    r.w[1] = q.y;
    r.w[2] = q.z;
    r.w[3] = q.w;
  } else if constexpr (NB == 8) {
    const uint2 q = *reinterpret_cast<const uint2*>(sp);
    r.w[0] = q.x;
    r.w[1] = q.y;
  } else if constexpr (NB == 4) {
    r.w[0] = *reinterpret_cast<const unsigned int*>(sp);
  } else {
    const unsigned int w = *reinterpret_cast<const unsigned int*>(sp);
    r.w[0] = ((u64)src & 2) ? (w >> 16) : (w & 0xffffu);
  }
}

template <typename T, int VEC, int ZG, int P>
struct StageLayout {
  using SD = StepData<T, VEC, ZG, P>;
  static constexpr int CBV = SD::NBV < 4 ? 4 : SD::NBV;
  static constexpr int CBZ = SD::NBZ < 4 ? 4 : SD::NBZ;
  static constexpr int PT = P * (3 * CBV + 3 * SD::NZL * CBZ);  // bytes per thread and stage
};

template <typename T, int VEC, int ZG, int P, int NS, int MAXREG>
__global__ void __maxnreg__(MAXREG) gspn_fwd_v2(const void* __restrict__ xp, const void* __restrict__ lamp,
                                                    const void* __restrict__ zp, const void* __restrict__ up,
                                                    void* __restrict__ yp, int B, int H, int W, int C, int G,
                                                    int GS, int ck, int nwin, int ncs, int TC, int pfd) {
  static_assert(NS >= 2 && NS <= 8, "2 <= NS <= 8 stages");
  using SD = StepData<T, VEC, ZG, P>;
  using SL = StageLayout<T, VEC, ZG, P>;
  constexpr int ISZ = T::SIZE;
  constexpr int NBV = SD::NBV;
  constexpr int NBZ = SD::NBZ;
  constexpr int NZL = SD::NZL;
  constexpr int NZ = ZG == 0 ? VEC : ZG;
  constexpr int CBV = SL::CBV;
  constexpr int CBZ = SL::CBZ;
  (void)pfd;

  extern __shared__ float4 smem4[];
  unsigned char* smb = reinterpret_cast<unsigned char*>(smem4);

  int bid = blockIdx.x;
  const int k = bid % nwin;
  bid /= nwin;
  const int cs = bid % ncs;
  bid /= ncs;
  const int d = bid & 3;
  const int b = bid >> 2;
  const bool is_col = d < 2;
  const bool rev = (d & 1) != 0;
  const int L = is_col ? H : W;
  const int Sn = is_col ? W : H;
  const int start = k * ck;
  if (start >= Sn) return;  // uniform over the CTA
  const int n = min(ck, Sn - start);

  const int tid = threadIdx.x;
  const int nthr = blockDim.x;
  const int lane = tid & 31;
  const int warp = tid >> 5;
  const int nwarps = nthr >> 5;
  const int c_t = tid % TC;
  const int l_t = tid / TC;
  const int ch0 = (cs * TC + c_t) * VEC;
  const bool ch_ok = ch0 < C;
  const int p0 = l_t * P;
  const bool has_u = up != nullptr;

  bool pv[P], hpv[P], hnv[P];
#pragma unroll
  for (int j = 0; j < P; ++j) {
    const int p = p0 + j;
    pv[j] = ch_ok && p < L;
    hpv[j] = p > 0;
    hnv[j] = p < L - 1;
  }

  const i64 line_px = is_col ? W : 1;
  const i64 scan_px = is_col ? 1 : W;
  const i64 step_px = rev ? -scan_px : scan_px;
  const int s0 = rev ? start + n - 1 : start;
  const int cc = ch_ok ? ch0 : 0;
  const int pp = p0 < L ? p0 : 0;
  const i64 pix0 = (i64)b * H * W + (i64)pp * line_px + (i64)s0 * scan_px;
  const int zb = cc / GS;

  Addr<T, VEC, ZG, P> A;
  A.x = (const unsigned char*)xp + (pix0 * C + cc) * ISZ;
  A.l = (const unsigned char*)lamp + ((pix0 * 4 + d) * C + cc) * ISZ;
  A.u = has_u ? (const unsigned char*)up + ((pix0 * 4 + d) * C + cc) * ISZ : A.l;
  const i64 zrow0 = (pix0 * 4 + d) * 3 * (i64)G;
  A.z = (const unsigned char*)zp + (zrow0 + zb) * ISZ;
  A.xl = line_px * C * ISZ;
  A.xs = step_px * C * ISZ;
  A.ll = line_px * 4 * C * ISZ;
  A.ls = step_px * 4 * C * ISZ;
  A.zl = line_px * 12 * (i64)G * ISZ;
  A.zs = step_px * 12 * (i64)G * ISZ;
  unsigned char* yb = (unsigned char*)yp + ((pix0 * 4 + d) * C + cc) * ISZ;

  int zoff[3 * NZL];
#pragma unroll
  for (int kk = 0; kk < 3; ++kk) {
#pragma unroll
    for (int i = 0; i < NZL; ++i) zoff[kk * NZL + i] = (kk * G + (ZG == 0 ? (cc + i) / GS - zb : 0)) * ISZ;
  }

  // ---- shared memory: NS stages, then the edge slots
  const int SB = nthr * SL::PT;                     // bytes of one stage
  const int vstride = nthr * CBV;                   // between x/lam/u items
  const int zstride = nthr * CBZ;                   // between logit items
  const int offv = tid * CBV;                       // this thread's x/lam/u slot
  const int offz = 3 * P * nthr * CBV + tid * CBZ;  // this thread's first logit slot
  const unsigned sm0 = smem_u32(smb);
  float* smem = reinterpret_cast<float*>(smb + NS * SB);

  auto issue = [&](int t, int s) {
    const unsigned base = sm0 + (unsigned)(s * SB);
    const i64 tx = (i64)t * A.xs, tl = (i64)t * A.ls, tz = (i64)t * A.zs;
#pragma unroll
    for (int j = 0; j < P; ++j) {
      stage_item<NBV>(base + (j * 3 + 0) * vstride + offv, A.x + tx + j * A.xl, pv[j]);
      stage_item<NBV>(base + (j * 3 + 1) * vstride + offv, A.l + tl + j * A.ll, pv[j]);
      if (has_u) stage_item<NBV>(base + (j * 3 + 2) * vstride + offv, A.u + tl + j * A.ll, pv[j]);
      const unsigned char* zq = A.z + tz + j * A.zl;
#pragma unroll
      for (int kk = 0; kk < 3; ++kk) {
#pragma unroll
        for (int i = 0; i < NZL; ++i)
          stage_item<NBZ>(base + offz + ((j * 3 + kk) * NZL + i) * zstride, zq + zoff[kk * NZL + i], pv[j]);
      }
    }
  };

  // prologue: steps 0 .. NS-2 in flight (one group each, empty past the window)
#pragma unroll
  for (int t = 0; t < NS - 1; ++t) {
    if (t < n) issue(t, t);
    cp_commit();
  }

  const int nslot = nwarps * TC;
  auto slot_ptr = [&](int par, int which, int slot) -> float* {
    return smem + ((u64)((par * 2 + which) * nslot + slot)) * VEC;
  };
  const bool w_lo = lane < TC;
  const bool w_hi = lane + TC >= 32;
  const int my_lo_slot = warp * TC + lane;
  const int my_hi_slot = warp * TC + lane - (32 - TC);
  const int up_t = tid - TC, dn_t = tid + TC;
  const bool up_smem = lane < TC, dn_smem = lane + TC >= 32;
  const bool up_ok = up_t >= 0, dn_ok = dn_t < nthr;
  const int up_slot = up_ok ? (up_t >> 5) * TC + (up_t & 31) - (32 - TC) : 0;
  const int dn_slot = dn_ok ? (dn_t >> 5) * TC + (dn_t & 31) : 0;

  float h[P][VEC];
#pragma unroll
  for (int j = 0; j < P; ++j) {
#pragma unroll
    for (int v = 0; v < VEC; ++v) h[j][v] = 0.f;
  }
  if (w_lo) smem_put<VEC>(slot_ptr(0, 0, my_lo_slot), h[0]);
  if (w_hi) smem_put<VEC>(slot_ptr(0, 1, my_hi_slot), h[P - 1]);
  __syncthreads();

  int rs = 0;       // stage of step t
  int ws = NS - 1;  // stage of step t + NS - 1
  for (int t = 0; t < n; ++t) {
    const int par = t & 1;
    if (t + NS - 1 < n) issue(t + NS - 1, ws);
    cp_commit();
    cp_wait<NS - 1>();  // the group of step t has landed (this thread's copies)

    // read stage rs back into registers
    SD cur;
    {
      const unsigned char* sb = smb + rs * SB;
      const i64 tx = (i64)t * A.xs, tl = (i64)t * A.ls, tz = (i64)t * A.zs;
#pragma unroll
      for (int j = 0; j < P; ++j) {
        unstage_item<NBV>(cur.x[j], sb + (j * 3 + 0) * vstride + offv, A.x + tx + j * A.xl);
        unstage_item<NBV>(cur.l[j], sb + (j * 3 + 1) * vstride + offv, A.l + tl + j * A.ll);
        if (has_u) unstage_item<NBV>(cur.u[j], sb + (j * 3 + 2) * vstride + offv, A.u + tl + j * A.ll);
        const unsigned char* zq = A.z + tz + j * A.zl;
#pragma unroll
        for (int kk = 0; kk < 3; ++kk) {
#pragma unroll
          for (int i = 0; i < NZL; ++i)
            unstage_item<NBZ>(cur.z[j][kk][i], sb + offz + ((j * 3 + kk) * NZL + i) * zstride,
                              zq + zoff[kk * NZL + i]);
        }
      }
    }
    rs = rs + 1 == NS ? 0 : rs + 1;
    ws = ws + 1 == NS ? 0 : ws + 1;

    float upv[VEC], dnv[VEC];
    if (TC < 32) {
#pragma unroll
      for (int v = 0; v < VEC; ++v) {
        upv[v] = __shfl_up_sync(0xffffffffu, h[P - 1][v], TC);
        dnv[v] = __shfl_down_sync(0xffffffffu, h[0][v], TC);
      }
    }
    if (up_smem) {
      if (up_ok) {
        smem_get<VEC>(upv, slot_ptr(par, 1, up_slot));
      } else {
#pragma unroll
        for (int v = 0; v < VEC; ++v) upv[v] = 0.f;
      }
    }
    if (dn_smem) {
      if (dn_ok) {
        smem_get<VEC>(dnv, slot_ptr(par, 0, dn_slot));
      } else {
#pragma unroll
        for (int v = 0; v < VEC; ++v) dnv[v] = 0.f;
      }
    }

    const i64 ty = (i64)t * A.ls;
#pragma unroll
    for (int j = 0; j < P; ++j) {
      float ga[3][NZ];
#pragma unroll
      for (int i = 0; i < NZ; ++i) {
        float z1, z2, z3;
        if constexpr (ZG == 0) {
          z1 = get<T>(cur.z[j][0][i], 0);
          z2 = get<T>(cur.z[j][1][i], 0);
          z3 = get<T>(cur.z[j][2][i], 0);
        } else {
          z1 = get<T>(cur.z[j][0][0], i);
          z2 = get<T>(cur.z[j][1][0], i);
          z3 = get<T>(cur.z[j][2][0], i);
        }
        gates3(z1, z2, z3, hpv[j], hnv[j], ga[0][i], ga[1][i], ga[2][i]);
      }
      float yo[VEC];
#pragma unroll
      for (int v = 0; v < VEC; ++v) {
        const int gi = ZG == 0 ? v : (v * NZ) / VEC;
        const float old = h[j][v];
        const float nx = (j + 1 < P) ? h[j + 1][v] : dnv[v];
        float nv = get<T>(cur.l[j], v) * get<T>(cur.x[j], v);
        nv = fmaf(ga[0][gi], upv[v], nv);
        nv = fmaf(ga[1][gi], old, nv);
        nv = fmaf(ga[2][gi], nx, nv);
        nv = pv[j] ? nv : 0.f;
        upv[v] = old;
        h[j][v] = nv;
        yo[v] = has_u ? nv * get<T>(cur.u[j], v) : nv;
      }
      if (pv[j]) {
        Raw<NBV> r;
        pack<T, VEC>(r, yo);
        st_raw<NBV>(yb + ty + j * A.ll, r);
      }
    }

    if (w_lo) smem_put<VEC>(slot_ptr(par ^ 1, 0, my_lo_slot), h[0]);
    if (w_hi) smem_put<VEC>(slot_ptr(par ^ 1, 1, my_hi_slot), h[P - 1]);
    __syncthreads();
  }
  cp_wait<0>();  // no copy outlives the CTA (only empty groups remain here)
}
