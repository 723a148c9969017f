class CustomError extends Error {
  constructor(message) {
    super(message);
    this.name = 'CustomError';
  }
}

exports.handler = async (event) => {
  if (event.action === 'raise') throw new CustomError('something went wrong');
  if (event.action === 'exit') process.exit(3);
  return { ok: true };
};
