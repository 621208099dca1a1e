// CSR transpose helpers. A subgroup walks its rows in order, one chunk of `gl_SubgroupSize`
// nonzeros at a time; within a chunk a lane learns how many earlier lanes hold the same
// column (its rank) and whether it is the last of them, so that per-column cursors advance
// in row order -- and in position order within a row, duplicates included -- without atomics.
#ifndef VKATTN_SPARSE_TRANSPOSE_RANK_GLSL
#define VKATTN_SPARSE_TRANSPOSE_RANK_GLSL

// Lanes past the row's end pass a unique negative column so that they match nobody.
void column_rank(int column, out uint rank, out bool last) {
    rank = 0u;
    last = true;
    for (uint j = 0u; j < gl_SubgroupSize; ++j) {
        const int other = subgroupShuffle(column, j);
        if (other == column) {
            if (j < gl_SubgroupInvocationID) rank += 1u;
            if (j > gl_SubgroupInvocationID) last = false;
        }
    }
}

// The first row of tile `tile` when the rows are cut into `tiles` pieces of about equal
// nonzero counts: the first row whose offset reaches tile * nnz / tiles (binary search over
// the row offsets; a macro because GLSL functions cannot take buffer arrays). tile * rem
// stays below tiles^2, so 32 bits suffice.
#define TILE_FIRST_ROW(offsets, tile, tiles, rows, nnz, result) { \
    const uint q_ = (nnz) / (tiles), rem_ = (nnz) % (tiles); \
    const uint target_ = (tile) * q_ + ((tile) * rem_ + (tiles) - 1u) / (tiles); /* ceil(tile * nnz / tiles) */ \
    uint lo_ = (tile) >= (tiles) ? (rows) : 0u, hi_ = (rows); \
    while (lo_ < hi_) { \
        const uint mid_ = (lo_ + hi_) / 2u; \
        if (uint(clamp(offsets[mid_], 0, int(nnz))) < target_) lo_ = mid_ + 1u; else hi_ = mid_; \
    } \
    result = lo_; }

#endif
