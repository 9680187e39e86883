/**
 * Undo and redo as a list of saved graph states (serialized editor workflows). The editor records a state
 * after each finished change; undo and redo hand back the state to load. Knows nothing of the graph itself.
 */
export class UndoStack {
  constructor(limit = 100) {
    this.limit = limit;
    this.states = [];
    this.index = -1;
  }

  /** Forget the history; `state` is the starting point. */
  reset(state) {
    this.states = [state];
    this.index = 0;
  }

  /** Record `state` after a change; a state equal to the current one is not a change. */
  record(state) {
    if (this.states[this.index] === state) return false;
    this.states = this.states.slice(0, this.index + 1);
    this.states.push(state);
    if (this.states.length > this.limit) this.states.shift();
    this.index = this.states.length - 1;
    return true;
  }

  get current() {
    return this.states[this.index] ?? null;
  }

  undo() {
    if (this.index <= 0) return null;
    this.index -= 1;
    return this.states[this.index];
  }

  redo() {
    if (this.index >= this.states.length - 1) return null;
    this.index += 1;
    return this.states[this.index];
  }
}
