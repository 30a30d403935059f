// Forward of gspn2d as one CUDA kernel, compiled at run time with NVRTC (through cupy.RawModule).
// Self-contained: no #include, so NVRTC needs no CUDA headers (bf16/fp16 conversions are inline PTX).
//
// Semantics (see src/cgspn/ops/gspn/reference.py):
//   x (B,H,W,C); lam, u, y (B,H,W,4,C); z = gate logits (B,H,W,4,3,G), channel c uses group c / (C/G).
//   Direction d: 0 left->right (lines are columns: line position = row, scan along W), 1 right->left,
//   2 top->bottom (lines are rows: line position = column, scan along H), 3 bottom->top.
//   h[p] = lam*x + g1*h'[p-1] + g2*h'[p] + g3*h'[p+1] (h' = state of the previous scan step, 0 outside
//   [0, L)); g_k = sigmoid(z_k) / S, S = sum over the neighbours that exist (p = 0 drops g1, p = L-1
//   drops g3), S >= 1e-7; zero state at the first step of each window [k*ck, (k+1)*ck) of the scan axis
//   (absolute positions, the same windows for all directions). y = u * h (u optional), fp32 state.
//
// Work decomposition: one CTA per (batch b, direction d, channel slice cs, window k), blockIdx.x =
// ((b*4 + d)*ncs + cs)*nwin + k. Thread tid = l_t*TC + c_t owns VEC consecutive channels
// ch0 = (cs*TC + c_t)*VEC (one 16-byte vector for bf16/fp16 VEC=8, fp32 VEC=4) at P consecutive line
// positions p0 = l_t*P .. p0+P-1, and walks the window step by step with its state in registers.
// Neighbour exchange along the line: positions inside the thread are registers; the end positions come
// from the line-neighbour threads tid -/+ TC: warp shuffles when they are in the same warp, otherwise a
// small double-buffered shared-memory slot per warp edge; one __syncthreads per step.
// Loads: RP = the next step's inputs are loaded into registers while the current step computes;
// pfd > 0 = in addition, L2 prefetch of the inputs pfd steps ahead (no registers).
// Gates: ZG = number of distinct logits per gate a thread needs per position: VEC when G == C (one vector
// load), VEC/GS when GS = C/G divides VEC, 1 when VEC divides GS (computed once, broadcast), 0 = general
// (one scalar load per channel). Normalisation uses the product form g1 = a2 a3 / D, g2 = a1 a3 / D,
// g3 = a1 a2 / D with a_k = 1 + exp(-z_k), D = a2 a3 + a1 a3 + a1 a2 (4 MUFU ops instead of 7), with an
// exact fallback when every sigmoid is tiny (the 1e-7 clamp of S applies there).
//
// Requirements (checked by the Python launcher): contiguous tensors, C % VEC == 0, data pointers aligned
// to VEC*sizeof(T), blockDim.x a multiple of 32 and >= TC*ceil(L/P) for L = max(H, W), TC <= 32,
// dynamic shared memory = 2*2*(blockDim.x/32)*TC*VEC*4 bytes.

struct F32 {
  static constexpr int SIZE = 4;
  static constexpr int KIND = 0;
};
struct BF16 {
  static constexpr int SIZE = 2;
  static constexpr int KIND = 1;
};
struct F16 {
  static constexpr int SIZE = 2;
  static constexpr int KIND = 2;
};

typedef unsigned long long u64;
typedef long long i64;

template <int NB>
struct Raw {
  unsigned int w[NB >= 4 ? NB / 4 : 1];
};

template <int NB>
__device__ __forceinline__ void ld_raw(Raw<NB>& r, const void* p) {
  if constexpr (NB == 16) {
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r.w[0]), "=r"(r.w[1]), "=r"(r.w[2]), "=r"(r.w[3])
                 : "l"(p));
  } else if constexpr (NB == 8) {
    asm volatile("ld.global.nc.L1::no_allocate.v2.u32 {%0,%1}, [%2];" : "=r"(r.w[0]), "=r"(r.w[1]) : "l"(p));
  } else if constexpr (NB == 4) {
    asm volatile("ld.global.nc.L1::no_allocate.u32 %0, [%1];" : "=r"(r.w[0]) : "l"(p));
  } else {
    static_assert(NB == 2, "Raw loads are 2, 4, 8 or 16 bytes");
    unsigned short h;
    asm volatile("ld.global.nc.L1::no_allocate.u16 %0, [%1];" : "=h"(h) : "l"(p));
    r.w[0] = h;
  }
}

template <int NB>
__device__ __forceinline__ void st_raw(void* p, const Raw<NB>& r) {
  if constexpr (NB == 16) {
    asm volatile("st.global.v4.u32 [%0], {%1,%2,%3,%4};" ::"l"(p), "r"(r.w[0]), "r"(r.w[1]), "r"(r.w[2]),
                 "r"(r.w[3])
                 : "memory");
  } else if constexpr (NB == 8) {
    asm volatile("st.global.v2.u32 [%0], {%1,%2};" ::"l"(p), "r"(r.w[0]), "r"(r.w[1]) : "memory");
  } else if constexpr (NB == 4) {
    asm volatile("st.global.u32 [%0], %1;" ::"l"(p), "r"(r.w[0]) : "memory");
  } else {
    static_assert(NB == 2, "Raw stores are 2, 4, 8 or 16 bytes");
    unsigned short h = (unsigned short)(r.w[0] & 0xffffu);
    asm volatile("st.global.u16 [%0], %1;" ::"l"(p), "h"(h) : "memory");
  }
}

template <int NB>
__device__ __forceinline__ void zero_raw(Raw<NB>& r) {
#pragma unroll
  for (int i = 0; i < (NB >= 4 ? NB / 4 : 1); ++i) r.w[i] = 0u;
}

__device__ __forceinline__ void prefetch_l2(const void* p) { asm volatile("prefetch.global.L2 [%0];" ::"l"(p)); }

// element i of a raw vector of T, as float
template <typename T, int NB>
__device__ __forceinline__ float get(const Raw<NB>& r, int i) {
  if constexpr (T::KIND == 0) {
    return __uint_as_float(r.w[i]);
  } else {
    const unsigned int word = r.w[i >> 1];
    if constexpr (T::KIND == 1) {
      return __uint_as_float((i & 1) ? (word & 0xffff0000u) : (word << 16));
    } else {
      const unsigned short bits = (unsigned short)((i & 1) ? (word >> 16) : (word & 0xffffu));
      float f;
      asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(bits));
      return f;
    }
  }
}

// two floats -> one 32-bit word of two 16-bit values (lo in the low half), round to nearest even
template <typename T>
__device__ __forceinline__ unsigned int pack2(float lo, float hi) {
  unsigned int w;
  if constexpr (T::KIND == 1) {
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(w) : "f"(hi), "f"(lo));
  } else {
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(w) : "f"(hi), "f"(lo));
  }
  return w;
}

template <typename T, int N>
__device__ __forceinline__ void pack(Raw<N * T::SIZE>& r, const float* f) {
  if constexpr (T::KIND == 0) {
#pragma unroll
    for (int i = 0; i < N; ++i) r.w[i] = __float_as_uint(f[i]);
  } else if constexpr (N == 1) {
    r.w[0] = pack2<T>(f[0], 0.f) & 0xffffu;
  } else {
#pragma unroll
    for (int i = 0; i < N / 2; ++i) r.w[i] = pack2<T>(f[2 * i], f[2 * i + 1]);
  }
}

// Normalised gates of one position. hp: neighbour p-1 exists; hn: neighbour p+1 exists.
__device__ __forceinline__ void gates3(float z1, float z2, float z3, bool hp, bool hn, float& g1, float& g2,
                                       float& g3) {
  const float INF = __int_as_float(0x7f800000);
  const float BIG = 1e15f;
  const float a1 = 1.f + __expf(-z1);
  const float a2 = 1.f + __expf(-z2);
  const float a3 = 1.f + __expf(-z3);
  // clamp (keeps NaN) so that the pairwise products stay finite
  const float c1 = a1 > BIG ? BIG : a1;
  const float c2 = a2 > BIG ? BIG : a2;
  const float c3 = a3 > BIG ? BIG : a3;
  const float b1 = hp ? c1 : 1.f;
  const float b3 = hn ? c3 : 1.f;
  const float t1 = hp ? c2 * b3 : 0.f;
  const float t2 = b1 * b3;
  const float t3 = hn ? b1 * c2 : 0.f;
  const float amin = fminf(a2, fminf(hp ? a1 : INF, hn ? a3 : INF));
  if (amin > 1e6f) {
    // every existing sigmoid < 1e-6: exact s_k / max(S, 1e-7) (the clamp may be active)
    const float s1 = hp ? __frcp_rn(a1) : 0.f;
    const float s2 = __frcp_rn(a2);
    const float s3 = hn ? __frcp_rn(a3) : 0.f;
    const float S = fmaxf(s1 + s2 + s3, 1e-7f);
    g1 = s1 / S;
    g2 = s2 / S;
    g3 = s3 / S;
  } else {
    const float r = __fdividef(1.f, t1 + t2 + t3);
    g1 = t1 * r;
    g2 = t2 * r;
    g3 = t3 * r;
  }
}

template <int VEC>
__device__ __forceinline__ void smem_put(float* dst, const float* v) {
  if constexpr (VEC % 4 == 0) {
#pragma unroll
    for (int i = 0; i < VEC; i += 4)
      *reinterpret_cast<float4*>(dst + i) = make_float4(v[i], v[i + 1], v[i + 2], v[i + 3]);
  } else {
#pragma unroll
    for (int i = 0; i < VEC; ++i) dst[i] = v[i];
  }
}

template <int VEC>
__device__ __forceinline__ void smem_get(float* v, const float* src) {
  if constexpr (VEC % 4 == 0) {
#pragma unroll
    for (int i = 0; i < VEC; i += 4) {
      const float4 q = *reinterpret_cast<const float4*>(src + i);
      v[i] = q.x;
      v[i + 1] = q.y;
      v[i + 2] = q.z;
      v[i + 3] = q.w;
    }
  } else {
#pragma unroll
    for (int i = 0; i < VEC; ++i) v[i] = src[i];
  }
}

template <typename T, int VEC, int ZG, int P>
struct StepData {
  static constexpr int NBV = VEC * T::SIZE;
  static constexpr int NBZ = (ZG == 0 ? 1 : ZG) * T::SIZE;
  static constexpr int NZL = ZG == 0 ? VEC : 1;
  Raw<NBV> x[P], l[P], u[P];
  Raw<NBZ> z[P][3][NZL];
};

template <typename T, int VEC, int ZG, int P>
struct Addr {
  // element pointers of position 0 at scan step 0, and the element strides along the line / scan
  const unsigned char* x;
  const unsigned char* l;
  const unsigned char* u;
  const unsigned char* z;
  i64 xl, xs, ll, ls, zl, zs;  // in bytes
};

template <typename T, int VEC, int ZG, int P>
__device__ __forceinline__ void load_step(StepData<T, VEC, ZG, P>& D, const Addr<T, VEC, ZG, P>& A, int t,
                                          const bool* pv, bool has_u, const int* zoff) {
  using SD = StepData<T, VEC, ZG, P>;
  const i64 tx = (i64)t * A.xs, tl = (i64)t * A.ls, tz = (i64)t * A.zs;
#pragma unroll
  for (int j = 0; j < P; ++j) {
    if (pv[j]) {
      ld_raw<SD::NBV>(D.x[j], A.x + tx + j * A.xl);
      ld_raw<SD::NBV>(D.l[j], A.l + tl + j * A.ll);
      if (has_u) ld_raw<SD::NBV>(D.u[j], A.u + tl + j * A.ll);
      const unsigned char* zp = A.z + tz + j * A.zl;
#pragma unroll
      for (int k = 0; k < 3; ++k) {
#pragma unroll
        for (int i = 0; i < SD::NZL; ++i) ld_raw<SD::NBZ>(D.z[j][k][i], zp + zoff[k * SD::NZL + i]);
      }
    } else {
      zero_raw<SD::NBV>(D.x[j]);
      zero_raw<SD::NBV>(D.l[j]);
      zero_raw<SD::NBV>(D.u[j]);
#pragma unroll
      for (int k = 0; k < 3; ++k) {
#pragma unroll
        for (int i = 0; i < SD::NZL; ++i) zero_raw<SD::NBZ>(D.z[j][k][i]);
      }
    }
  }
}

template <typename T, int VEC, int ZG, int P, bool RP, int MAXREG>
__global__ void __maxnreg__(MAXREG) gspn_fwd(const void* __restrict__ xp, const void* __restrict__ lamp,
                                                 const void* __restrict__ zp, const void* __restrict__ up,
                                                 void* __restrict__ yp, int B, int H, int W, int C, int G, int GS,
                                                 int ck, int nwin, int ncs, int TC, int pfd) {
  using SD = StepData<T, VEC, ZG, P>;
  constexpr int ISZ = T::SIZE;
  constexpr int NBV = SD::NBV;
  constexpr int NZL = SD::NZL;
  constexpr int NZ = ZG == 0 ? VEC : ZG;  // distinct gate values per gate and position

  extern __shared__ float4 smem4[];
  float* smem = reinterpret_cast<float*>(smem4);

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

  // geometry: pixel index = b*H*W + row*W + col; position p along the line, scan position s
  const i64 line_px = is_col ? W : 1;
  const i64 scan_px = is_col ? 1 : W;
  const i64 step_px = rev ? -scan_px : scan_px;
  const int s0 = rev ? start + n - 1 : start;
  const int cc = ch_ok ? ch0 : 0;  // keep idle threads' addresses inside the tensors
  const int pp = p0 < L ? p0 : 0;
  const i64 pix0 = (i64)b * H * W + (i64)pp * line_px + (i64)s0 * scan_px;
  const int zb = cc / GS;  // first gate group of this thread

  Addr<T, VEC, ZG, P> A;
  A.x = (const unsigned char*)xp + (pix0 * C + cc) * ISZ;
  A.l = (const unsigned char*)lamp + ((pix0 * 4 + d) * C + cc) * ISZ;
  A.u = has_u ? (const unsigned char*)up + ((pix0 * 4 + d) * C + cc) * ISZ : A.l;
  const i64 zrow0 = (pix0 * 4 + d) * 3 * (i64)G;  // element index of this pixel's 3*G logits
  A.z = (const unsigned char*)zp + (zrow0 + zb) * ISZ;
  A.xl = line_px * C * ISZ;
  A.xs = step_px * C * ISZ;
  A.ll = line_px * 4 * C * ISZ;
  A.ls = step_px * 4 * C * ISZ;
  A.zl = line_px * 12 * (i64)G * ISZ;
  A.zs = step_px * 12 * (i64)G * ISZ;
  unsigned char* yb = (unsigned char*)yp + ((pix0 * 4 + d) * C + cc) * ISZ;

  // byte offsets of the logit loads relative to A.z: gate k at +k*G; ZG == 0: one per channel
  int zoff[3 * NZL];
#pragma unroll
  for (int kk = 0; kk < 3; ++kk) {
#pragma unroll
    for (int i = 0; i < NZL; ++i) zoff[kk * NZL + i] = (kk * G + (ZG == 0 ? (cc + i) / GS - zb : 0)) * ISZ;
  }

  // L2 prefetch duty: one thread per 64 bytes of a pixel's channel slice (first thread of the slice too)
  const bool pf_vec = ch_ok && (((ch0 * ISZ) % 64) < NBV || c_t == 0);
  const bool pf_z = (ZG == VEC) ? pf_vec : (ch_ok && c_t == 0);
  const unsigned char* zrow_b = (const unsigned char*)zp + zrow0 * ISZ;  // start of the pixel's logits
  const i64 zrow_last = (3 * (i64)G - 1) * ISZ;

  // shared-memory edge slots: [parity][lo/hi][nwarps*TC][VEC] floats
  const int nslot = nwarps * TC;
  auto slot_ptr = [&](int par, int which, int slot) -> float* {
    return smem + ((u64)((par * 2 + which) * nslot + slot)) * VEC;
  };
  const bool w_lo = lane < TC;        // my lo is read by tid - TC in another warp
  const bool w_hi = lane + TC >= 32;  // my hi is read by tid + TC in another warp
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

  SD cur;
  SD nxt;
  if (RP) load_step<T, VEC, ZG, P>(cur, A, 0, pv, has_u, zoff);
  if (pfd > 0) {
    // warm-up prefetch of steps 1 .. pfd-1 (step pfd + t is issued at step t)
    for (int t = RP ? 1 : 0; t < pfd && t < n; ++t) {
#pragma unroll
      for (int j = 0; j < P; ++j) {
        if (!pv[j]) continue;
        if (pf_vec) {
          prefetch_l2(A.x + (i64)t * A.xs + j * A.xl);
          prefetch_l2(A.l + (i64)t * A.ls + j * A.ll);
          if (has_u) prefetch_l2(A.u + (i64)t * A.ls + j * A.ll);
        }
        if (pf_z) {
          const unsigned char* zr = zrow_b + (i64)t * A.zs + j * A.zl;
          if (ZG == VEC) {
            prefetch_l2(A.z + (i64)t * A.zs + j * A.zl);
            prefetch_l2(A.z + (i64)t * A.zs + j * A.zl + G * ISZ);
            prefetch_l2(A.z + (i64)t * A.zs + j * A.zl + 2 * G * ISZ);
          } else {
            prefetch_l2(zr);
            prefetch_l2(zr + zrow_last);
          }
        }
      }
    }
  }

  for (int t = 0; t < n; ++t) {
    const int par = t & 1;
    if (RP) {
      if (t + 1 < n) load_step<T, VEC, ZG, P>(nxt, A, t + 1, pv, has_u, zoff);
    } else {
      load_step<T, VEC, ZG, P>(cur, A, t, pv, has_u, zoff);
    }
    if (pfd > 0 && t + pfd < n) {
      const int tp = t + pfd;
#pragma unroll
      for (int j = 0; j < P; ++j) {
        if (!pv[j]) continue;
        if (pf_vec) {
          prefetch_l2(A.x + (i64)tp * A.xs + j * A.xl);
          prefetch_l2(A.l + (i64)tp * A.ls + j * A.ll);
          if (has_u) prefetch_l2(A.u + (i64)tp * A.ls + j * A.ll);
        }
        if (pf_z) {
          if (ZG == VEC) {
            prefetch_l2(A.z + (i64)tp * A.zs + j * A.zl);
            prefetch_l2(A.z + (i64)tp * A.zs + j * A.zl + G * ISZ);
            prefetch_l2(A.z + (i64)tp * A.zs + j * A.zl + 2 * G * ISZ);
          } else {
            const unsigned char* zr = zrow_b + (i64)tp * A.zs + j * A.zl;
            prefetch_l2(zr);
            prefetch_l2(zr + zrow_last);
          }
        }
      }
    }

    // neighbours of the previous state: up = h'[p0-1], dn = h'[p0+P]
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
        upv[v] = old;  // becomes h'[p-1] of position j+1
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
    if (RP) cur = nxt;
  }
}

#ifdef GSPN_NVCC_INSTANTIATE
// Offline resource check (tools/cuda_scan_probe.py --nvcc-check writes a wrapper with the instantiations):
//   nvcc -arch=sm_90 -std=c++17 -cubin --resource-usage -DGSPN_NVCC_INSTANTIATE gspn_fwd.cu
template __global__ void gspn_fwd<BF16, 8, 8, 2, true, 255>(const void*, const void*, const void*, const void*,
                                                             void*, int, int, int, int, int, int, int, int, int,
                                                             int, int);
#endif
