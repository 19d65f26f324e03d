"""What the simulator answers, field by field: the key order of every served output (KIS's own, as
the shared fixtures and KIS_API.md §4 give it), the reference's endpoint table with what the
simulator serves of it, and the value formatters (KIS sends every scalar as a string: integer KRW,
fixed-decimal rates, YYYYMMDD dates).

`shaped(fields, values)` builds an output in KIS's key order and fails loudly when a builder forgot
a field, so a served answer can never silently lose one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

# --- outputs (key order as in ../shared/kis/fixtures, else as listed in KIS_API.md §4) ---------------
PRICE = (  # inquire-price `output` (fixture inquire_price_005930.json, 82 keys)
    "iscd_stat_cls_code", "marg_rate", "rprs_mrkt_kor_name", "new_hgpr_lwpr_cls_code", "bstp_kor_isnm",
    "temp_stop_yn", "oprc_rang_cont_yn", "clpr_rang_cont_yn", "crdt_able_yn", "grmn_rate_cls_code", "elw_pblc_yn",
    "stck_prpr", "prdy_vrss", "prdy_vrss_sign", "prdy_ctrt", "acml_tr_pbmn", "acml_vol", "prdy_vrss_vol_rate",
    "stck_oprc", "stck_hgpr", "stck_lwpr", "stck_mxpr", "stck_llam", "stck_sdpr", "wghn_avrg_stck_prc",
    "hts_frgn_ehrt", "frgn_ntby_qty", "pgtr_ntby_qty", "pvt_scnd_dmrs_prc", "pvt_frst_dmrs_prc", "pvt_pont_val",
    "pvt_frst_dmsp_prc", "pvt_scnd_dmsp_prc", "dmrs_val", "dmsp_val", "cpfn", "rstc_wdth_prc", "stck_fcam",
    "stck_sspr", "aspr_unit", "hts_deal_qty_unit_val", "lstn_stcn", "hts_avls", "per", "pbr", "stac_month",
    "vol_tnrt", "eps", "bps", "d250_hgpr", "d250_hgpr_date", "d250_hgpr_vrss_prpr_rate", "d250_lwpr",
    "d250_lwpr_date", "d250_lwpr_vrss_prpr_rate", "stck_dryy_hgpr", "dryy_hgpr_vrss_prpr_rate", "dryy_hgpr_date",
    "stck_dryy_lwpr", "dryy_lwpr_vrss_prpr_rate", "dryy_lwpr_date", "w52_hgpr", "w52_hgpr_vrss_prpr_ctrt",
    "w52_hgpr_date", "w52_lwpr", "w52_lwpr_vrss_prpr_ctrt", "w52_lwpr_date", "whol_loan_rmnd_rate", "ssts_yn",
    "stck_shrn_iscd", "fcam_cnnm", "cpfn_cnnm", "apprch_rate", "frgn_hldn_qty", "vi_cls_code", "ovtm_vi_cls_code",
    "last_ssts_cntg_qty", "invt_caful_yn", "mrkt_warn_cls_code", "short_over_yn", "sltr_yn", "mang_issu_cls_code")
LOAN_RATIO_ODD = "itewhol_loan_rmnd_ratem name"   # sic, with the space (KIS_API.md §9.8, fixture)
DAILY_SNAPSHOT = (  # inquire-daily-itemchartprice `output1` (fixture, 30 keys)
    "prdy_vrss", "prdy_vrss_sign", "prdy_ctrt", "stck_prdy_clpr", "acml_vol", "acml_tr_pbmn", "hts_kor_isnm",
    "stck_prpr", "stck_shrn_iscd", "prdy_vol", "stck_mxpr", "stck_llam", "stck_oprc", "stck_hgpr", "stck_lwpr",
    "stck_prdy_oprc", "stck_prdy_hgpr", "stck_prdy_lwpr", "askp", "bidp", "prdy_vrss_vol", "vol_tnrt", "stck_fcam",
    "lstn_stcn", "cpfn", "hts_avls", "per", "eps", "pbr", LOAN_RATIO_ODD)
DAILY_ROW = ("stck_bsop_date", "stck_clpr", "stck_oprc", "stck_hgpr", "stck_lwpr", "acml_vol", "acml_tr_pbmn",
             "flng_cls_code", "prtt_rate", "mod_yn", "prdy_vrss_sign", "prdy_vrss", "revl_issu_reas")
MINUTE_SNAPSHOT = ("prdy_vrss", "prdy_vrss_sign", "prdy_ctrt", "stck_prdy_clpr", "acml_vol", "acml_tr_pbmn",
                   "hts_kor_isnm", "stck_prpr")
MINUTE_ROW = ("stck_bsop_date", "stck_cntg_hour", "stck_prpr", "stck_oprc", "stck_hgpr", "stck_lwpr", "cntg_vol",
              "acml_tr_pbmn")
ORDER = ("KRX_FWDG_ORD_ORGNO", "ODNO", "ORD_TMD")    # order-cash / order-rvsecncl `output` (fixture)
PSBL_ORDER = ("ord_psbl_cash", "ord_psbl_sbst", "ruse_psbl_amt", "fund_rpch_chgs", "psbl_qty_calc_unpr",
              "nrcvb_buy_amt", "nrcvb_buy_qty", "max_buy_amt", "max_buy_qty", "cma_evlu_amt", "ovrs_re_use_amt_wcrc",
              "ord_psbl_frcr_amt_wcrc")
BALANCE_ROW = (  # inquire-balance `output1` rows (fixture, 26 keys)
    "pdno", "prdt_name", "trad_dvsn_name", "bfdy_buy_qty", "bfdy_sll_qty", "thdt_buyqty", "thdt_sll_qty", "hldg_qty",
    "ord_psbl_qty", "pchs_avg_pric", "pchs_amt", "prpr", "evlu_amt", "evlu_pfls_amt", "evlu_pfls_rt", "evlu_erng_rt",
    "loan_dt", "loan_amt", "stln_slng_chgs", "expd_dt", "fltt_rt", "bfdy_cprs_icdc", "item_mgna_rt_name",
    "grta_rt_name", "sbst_pric", "stck_loan_unpr")
BALANCE_SUMMARY = (  # inquire-balance `output2[0]` (fixture, 24 keys)
    "dnca_tot_amt", "nxdy_excc_amt", "prvs_rcdl_excc_amt", "cma_evlu_amt", "bfdy_buy_amt", "thdt_buy_amt",
    "nxdy_auto_rdpt_amt", "bfdy_sll_amt", "thdt_sll_amt", "d2_auto_rdpt_amt", "bfdy_tlex_amt", "thdt_tlex_amt",
    "tot_loan_amt", "scts_evlu_amt", "tot_evlu_amt", "nass_amt", "fncg_gld_auto_rdpt_yn", "pchs_amt_smtl_amt",
    "evlu_amt_smtl_amt", "evlu_pfls_smtl_amt", "tot_stln_slng_chgs", "bfdy_tot_asst_evlu_amt", "asst_icdc_amt",
    "asst_icdc_erng_rt")
CCLD_ROW = (  # inquire-daily-ccld `output1` rows (KIS_API.md §4.8 and the spec's column list)
    "ord_dt", "ord_gno_brno", "odno", "orgn_odno", "ord_dvsn_name", "sll_buy_dvsn_cd", "sll_buy_dvsn_cd_name", "pdno",
    "prdt_name", "ord_qty", "ord_unpr", "ord_tmd", "tot_ccld_qty", "avg_prvs", "cncl_yn", "tot_ccld_amt", "loan_dt",
    "ordr_empno", "ord_dvsn_cd", "cncl_cfrm_qty", "cnc_cfrm_qty", "rmn_qty", "rjct_qty", "ccld_cndt_name",
    "inqr_ip_addr", "cpbc_ordp_ord_rcit_dvsn_cd", "cpbc_ordp_infm_mthd_dvsn_cd", "infm_tmd", "ctac_tlno",
    "prdt_type_cd", "excg_dvsn_cd", "cpbc_ordp_mtrl_dvsn_cd", "ord_orgno", "rsvn_ord_end_dt", "excg_id_dvsn_Cd",
    "excg_id_dvsn_cd", "stpm_cndt_pric", "stpm_efct_occr_dtmd")
CCLD_TOTALS = ("tot_ord_qty", "tot_ccld_qty", "tot_ccld_amt", "prsm_tlex_smtl", "pchs_avg_pric")
RVSECNCL_ROW = (  # inquire-psbl-rvsecncl `output` rows (real only)
    "ord_gno_brno", "odno", "orgn_odno", "ord_dvsn_name", "pdno", "prdt_name", "rvse_cncl_dvsn_name", "ord_qty",
    "ord_unpr", "ord_tmd", "tot_ccld_qty", "tot_ccld_amt", "psbl_qty", "sll_buy_dvsn_cd", "ord_dvsn_cd",
    "mgco_aptm_odno", "excg_dvsn_cd", "excg_id_dvsn_cd", "excg_id_dvsn_name", "stpm_cndt_pric", "stpm_efct_occr_yn")

# --- the reference's endpoint table (KIS_API.md §2, §4) and what the simulator serves -------------------
Q = "/uapi/domestic-stock/v1/quotations/"
T = "/uapi/domestic-stock/v1/trading/"


@dataclass(frozen=True)
class Endpoint:
    name: str
    method: str
    path: str
    tr_ids: dict[str, str]     # real tr_id → simulator action; VTS ids follow the V rule (_vts)
    real_only: bool = False    # "not supported" on VTS in the reference: VTS answers OPSQ0002
    served: bool = True        # False: the simulator answers OPSQ0002 on both environments


ENDPOINTS = (
    Endpoint("current price", "GET", Q + "inquire-price", {"FHKST01010100": "price"}),
    Endpoint("daily bars", "GET", Q + "inquire-daily-itemchartprice", {"FHKST03010100": "daily"}),
    Endpoint("today's minute bars", "GET", Q + "inquire-time-itemchartprice", {"FHKST03010200": "minute"}),
    Endpoint("past-day minute bars", "GET", Q + "inquire-time-dailychartprice", {"FHKST03010230": "-"},
             real_only=True, served=False),
    Endpoint("cash order", "POST", T + "order-cash",
             {"TTTC0012U": "buy", "TTTC0802U": "buy", "TTTC0011U": "sell", "TTTC0801U": "sell"}),
    Endpoint("revise / cancel", "POST", T + "order-rvsecncl", {"TTTC0013U": "rvsecncl", "TTTC0803U": "rvsecncl"}),
    Endpoint("revisable orders", "GET", T + "inquire-psbl-rvsecncl",
             {"TTTC0084R": "psbl_rvsecncl", "TTTC8036R": "psbl_rvsecncl"}, real_only=True),
    Endpoint("buyable amount", "GET", T + "inquire-psbl-order", {"TTTC8908R": "psbl"}),
    Endpoint("sellable quantity", "GET", T + "inquire-psbl-sell", {"TTTC8408R": "-"}, real_only=True, served=False),
    Endpoint("balance", "GET", T + "inquire-balance", {"TTTC8434R": "balance"}),
    Endpoint("daily orders and fills", "GET", T + "inquire-daily-ccld",
             {"TTTC0081R": "ccld", "TTTC8001R": "ccld", "CTSC9215R": "ccld", "CTSC9115R": "ccld"}),
    Endpoint("holiday calendar", "GET", Q + "chk-holiday", {"CTCA0903R": "-"}, real_only=True, served=False),
)
NO_SERVICE = ("OPSQ0002", "없는 서비스 코드 입니다")    # KIS's answer for a TR it does not offer (community captures)


def vts_tr(tr_id: str) -> str:
    """The VTS id of a real TR (KIS_API.md §4): account/order TRs starting with T, J or C take a V."""
    return "V" + tr_id[1:] if tr_id[:1] in ("T", "J", "C") else tr_id


def unserved(virtual: bool) -> list[Endpoint]:
    """Reference endpoints the simulator answers with OPSQ0002 in this environment."""
    return [e for e in ENDPOINTS if not e.served or (virtual and e.real_only)]


# --- values --------------------------------------------------------------------------------------
def won(x) -> str:
    """An amount or price as KIS sends it: whole KRW, half up; unknown → "0"."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "0"
    return str(math.floor(float(x) + 0.5))


def dec(x, places: int = 2) -> str:
    """A rate or ratio with KIS's fixed decimals ("0.23", "-0.90"); unknown → zeros."""
    if x is None or (isinstance(x, float) and (math.isnan(x) or math.isinf(x))):
        x = 0.0
    text = f"{float(x):.{places}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def pct(num, den, places: int = 2) -> str:
    return dec(num / den * 100 if den else 0.0, places)


def sign(change: float, price: float, upper: float, lower: float) -> str:
    """KIS sign codes: 1 upper limit, 2 up, 3 unchanged, 4 lower limit, 5 down."""
    if change > 0:
        return "1" if price >= upper else "2"
    if change < 0:
        return "4" if price <= lower else "5"
    return "3"


def shaped(fields: tuple[str, ...], values: dict) -> dict:
    """`values` in KIS's key order; every field must be there, and nothing else."""
    missing = [f for f in fields if f not in values]
    extra = [k for k in values if k not in fields]
    if missing or extra:
        raise KeyError(f"simulator output: missing {missing}, unexpected {extra}")
    return {f: values[f] for f in fields}
