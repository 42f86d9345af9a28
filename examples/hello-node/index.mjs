// The smallest useful Node.js function: greets the caller by name (an ES module, as Lambda's console writes them).
export const handler = async (event, context) => {
  const name = (event && typeof event === "object" && event.name) || "world";
  console.log(`saying hello to ${name}`);
  return { message: `Hello, ${name}!`, requestId: context.awsRequestId };
};
