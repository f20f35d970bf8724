/**
 * DOC: reservation_ww_class
 *
 * `DEFINE_WD_CLASS(reservation_ww_class)` (drivers/dma-buf/dma-resv.c): the
 * ww_class of every reservation object, Wait-Die. Contexts locking several
 * reservation objects take their ticket from it; its lockdep keys are
 * `reservation_ww_class_acquire` and `reservation_ww_class_mutex`.
 *
 * Locking rules: one acquire context of this class per task at a time.
 *
 * @module
 */
import { WwClass } from "@dmalab/kernel";

/** `reservation_ww_class`: Wait-Die. */
export const reservationWwClass: WwClass = new WwClass("reservation_ww_class", { waitDie: true });
